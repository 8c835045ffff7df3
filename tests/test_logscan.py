"""The run-wide log scan (tests/logscan.py) fails a run whose logs hold a secret or a raw control character, and
passes a clean one."""

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
    "carriage return": lambda: "GET /verify/\rGET /admin 200",
    "terminal escape": lambda: "GET /verify/\x1b[31mred 401",
    "line separator": lambda: "tenant=acme\u2028GET /admin 200",
    "bidi override": lambda: "tenant=\u202eemca",
    "escaped": lambda: "GET /verify/\\x0a\\x1b[31m\\u2028\\u202e 401 tenant=caf\u00e9 \u79df\u6237",
}
# (A forged line after a raw LF is two lines to a scan; tests/test_logs.py and test_gunicorn.py check whole lines.)
CLEAN = {"clean", "escaped"}


@pytest.mark.parametrize("kind", LINES)
def test_scan_fails_the_run_only_when_a_secret_or_a_raw_control_was_logged(pytester, monkeypatch, kind):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_leak=LOGGING_TEST.format(line=LINES[kind]()))
    result = pytester.runpytest_subprocess("-p", "tests.logscan")
    leaks = kind not in CLEAN
    result.stdout.fnmatch_lines([f"log scan: * {int(leaks)} secrets or raw controls found", "*1 passed*"])
    assert result.ret == (1 if leaks else 0)
