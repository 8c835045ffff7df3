"""The instance folder: created private, and the secrets generated into it on first start."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 32


def make_private_folder(path: str) -> None:
    """Create ``path`` (mode 0700, whatever the umask) unless it exists; warn when others can enter it."""
    try:
        os.makedirs(path, mode=0o700)
        os.chmod(path, 0o700)  # makedirs' mode is filtered through the umask
    except FileExistsError:
        mode = os.stat(path).st_mode
        if stat.S_IMODE(mode) & 0o077:
            log.warning("%s can be read by other users; make it mode 0700.", path)


def create_private_file(path: str) -> None:
    """Create an empty file of mode 0600 unless it exists (SQLite then gives its -wal and -shm the same mode).

    A file that exists already (made by an older version, or by hand) keeps its
    mode, but a warning says when other users can read it.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            log.warning("%s can be read by other users; make it mode 0600 (and its -wal and -shm files).", path)
        return
    os.close(descriptor)


def load_or_create_secret(folder: str, name: str, what: str) -> str:
    """Return the secret kept in ``folder/name``, creating it (mode 0600) on first use."""
    path = os.path.join(folder, name)
    try:
        return read_secret(path)
    except FileNotFoundError:
        pass
    make_private_folder(folder)
    # Write to a private temporary file, then link it into place: when several
    # workers start at once, exactly one link wins and the others read its secret.
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())  # never link an empty file into place
        os.link(temporary, path)
        log.warning("Generated a %s and stored it in %s (mode 0600).", what, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return read_secret(path)


def read_secret(path: str) -> str:
    """Return the secret kept in ``path``; raise FileNotFoundError, or RuntimeError for one too short to use."""
    if os.stat(path).st_mode & 0o077:
        log.warning("%s can be read by other users; make it mode 0600.", path)
    with open(path, encoding="ascii") as file:
        secret = file.read().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise RuntimeError(f"{path} holds no usable secret (under {MIN_SECRET_LENGTH} characters); delete it.")
    return secret
