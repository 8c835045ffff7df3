"""gunicorn for the benchmark: the project's own gunicorn.conf.py, one server at a time, output to a file.

Unlike tests/servers.py this adds no access log: the benchmark runs the
configuration `make run` runs, where the app's own request log (one line per
request on stderr) is the only per-request logging.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import wait_for  # noqa: E402 (the tests' own readiness check)

START_TIMEOUT = 60.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn -c gunicorn.conf.py -w N in its own process group; ``with`` stops the whole group."""

    def __init__(self, app: str, env: dict[str, str], log_dir: Path, *, workers: int, ready_path: str):
        self.app = app
        # The development banner prints a token, and a seed file would add keys: neither belongs here.
        self.env = {k: v for k, v in os.environ.items() if k not in ("APIKEYS_DEV", "APIKEYS_SEED")} | env
        self.workers = workers
        self.ready_path = ready_path
        self.port = free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.log_path = log_dir / f"gunicorn-{app.replace(':', '-')}-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        """Start gunicorn and wait until it answers."""
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "--bind",
            f"{self.host}:{self.port}",
            "--workers",
            str(self.workers),
            "--error-logfile",
            str(self.log_path),
            self.app,
        ]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for(self.url + self.ready_path, timeout=START_TIMEOUT, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) that master and workers have used so far."""
        if self.process is None:
            return 0.0
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            if int(fields[2]) == self.process.pid:  # its process group: master and workers
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop master and workers: SIGTERM to the group, SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
