"""Turns that every worker of a host shares: exclusive locks on files in the private instance folder.

flock belongs to the open file, so each call opens its own descriptors: two
threads of one worker take turns as two processes do. Closing a descriptor
releases its lock, so a crashed holder never keeps a turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

POLL_SECONDS = 0.01


def acquire(paths: list[str], deadline: float | None, busy: type[Exception]) -> int:
    """Lock one of ``paths`` and return its descriptor, waiting until ``deadline`` (monotonic; None: as long as it
    takes); raise ``busy()`` when the deadline passes with every one taken."""
    descriptors = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in paths]
    held = None
    try:
        while held is None:
            held = next((descriptor for descriptor in descriptors if _try_lock(descriptor)), None)
            if held is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise busy()
                time.sleep(POLL_SECONDS)
        return held
    finally:
        for descriptor in descriptors:
            if descriptor != held:
                os.close(descriptor)


def release(descriptor: int) -> None:
    """Give a turn back."""
    os.close(descriptor)


@contextlib.contextmanager
def hold_one(paths: list[str], deadline: float | None, busy: type[Exception]):
    """Hold the lock of one of ``paths`` (see acquire) while the block runs."""
    descriptor = acquire(paths, deadline, busy)
    try:
        yield
    finally:
        release(descriptor)


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
