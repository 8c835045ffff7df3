"""The run-wide log scan (tests/logscan.py) fails a run whose logs hold a secret, and passes a clean one."""

from __future__ import annotations

import pytest

from apikeys import keys
from tests.servers import ROOT

pytest_plugins = ["pytester"]

LOGGING_TEST = """
import logging

def test_logs_something():
    logging.getLogger("apikeys.requests").warning({line!r})
"""

LINES = {
    "clean": lambda: "GET /verify 200 tenant=acme key=key_abc",
    "key": lambda: "presented " + keys.new_public_key("live") + "." + keys.new_secret("live"),
    "jwt": lambda: "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnRJZCI6ImFjbWUifQ.c2ln",
}


@pytest.mark.parametrize("kind", LINES)
def test_scan_fails_the_run_only_when_a_secret_was_logged(pytester, monkeypatch, kind):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_leak=LOGGING_TEST.format(line=LINES[kind]()))
    result = pytester.runpytest_subprocess("-p", "tests.logscan")
    leaks = kind != "clean"
    result.stdout.fnmatch_lines([f"log scan: * {int(leaks)} secrets found", "*1 passed*"])
    assert result.ret == (1 if leaks else 0)
