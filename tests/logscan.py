"""A check on the whole test run: no secret, full key or token ever reached a log, and no log line was forged.

Everything logged in-process during the run goes to one file, and every gunicorn
the tests start registers its log files (tests/servers.py). When the session ends
all of them are scanned for anything shaped like an API-key secret or a JWT, for
the JWT signing secrets the tests handed out, and for raw control characters
(what a request uses to forge a line or drive a terminal). A hit fails the run.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import pytest

SECRET_SHAPES = {
    "API-key secret": re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{38}"),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}"),
}

# What no log line may hold raw (a tab aside): C0 and C1 controls (CR, ESC, NEL...), the line and paragraph
# separators, and the bidi marks, embeddings, overrides and isolates. Read files with newline="" to see a CR.
RAW_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# Filled by the fixtures and helpers that hand out secrets or start servers.
signing_secrets: set[str] = set()
server_logs: list[Path] = []

_handler: logging.FileHandler | None = None


def pytest_configure(config):
    global _handler
    path = Path(tempfile.mkstemp(prefix="apikeys-test-run-", suffix=".log")[1])
    _handler = logging.FileHandler(path, encoding="utf-8")
    _handler.setLevel(logging.DEBUG)
    _handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(_handler)


def scan(paths: list[Path]) -> tuple[int, list[str]]:
    """Return how many lines were read, and a description (never the value) of every hit."""
    lines, hits = 0, []
    for path in paths:
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="replace", newline="") as file:
            text = file.read()
        for number, line in enumerate(text.split("\n"), start=1):
            if not line:
                continue
            lines += 1
            for kind, shape in SECRET_SHAPES.items():
                if shape.search(line):
                    hits.append(f"{path.name}:{number}: {kind}")
            if any(secret in line for secret in signing_secrets):
                hits.append(f"{path.name}:{number}: a JWT signing secret")
            control = RAW_CONTROL.search(line)
            if control:
                hits.append(f"{path.name}:{number}: a raw control character U+{ord(control.group()):04X}")
    return lines, hits


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    logging.getLogger().removeHandler(_handler)
    _handler.close()
    run_log = Path(_handler.baseFilename)
    lines, hits = scan([run_log, *server_logs])
    run_log.unlink()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(
            f"log scan: {lines} log lines in {1 + len(server_logs)} files, {len(hits)} secrets or raw controls found"
        )
        for hit in hits[:20]:
            reporter.write_line(f"  in a log: {hit}", red=True)
    if hits and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
