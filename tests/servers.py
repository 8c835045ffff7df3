"""Real servers for tests: gunicorn running apikeys (or any WSGI app) on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers at all (any status), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class Gunicorn:
    """gunicorn in its own process group, with its error and access logs in files."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *, workers: int = 4, app: str = "app:app"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.error_log = tmp_path / f"gunicorn-{self.port}-error.log"
        self.access_log = tmp_path / f"gunicorn-{self.port}-access.log"
        self.stdout_log = tmp_path / f"gunicorn-{self.port}-stdout.log"
        self.env = {**os.environ, **env}
        self.workers = workers
        self.app = app
        self.process: subprocess.Popen | None = None
        from tests import logscan  # every server's logs are scanned for secrets at the end of the run

        logscan.server_logs.extend([self.error_log, self.access_log, self.stdout_log])
        for name in ("APIKEYS_JWT_SECRET",):
            if env.get(name):
                logscan.signing_secrets.add(env[name])

    def start(self, ready_path: str = "/healthz") -> Gunicorn:
        """Start gunicorn and wait until it answers."""
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--error-logfile",
            str(self.error_log),
            "--access-logfile",
            str(self.access_log),
            self.app,
        ]
        with open(self.stdout_log, "ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.url + ready_path, process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the whole process group, master and workers."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """kill -9 the whole process group, as a crash would."""
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        """Return everything gunicorn and the app wrote: error log, access log and stdout."""
        return "".join(
            p.read_text(errors="replace") for p in (self.error_log, self.access_log, self.stdout_log) if p.exists()
        )

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
