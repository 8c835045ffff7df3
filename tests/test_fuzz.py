"""Hostile input: schemathesis, an independent OpenAPI fuzzer, against the live service under gunicorn."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import Gunicorn
from tests.servers import service_env
from tests.servers import token_for
from tests.test_gunicorn import Http

pytestmark = pytest.mark.slow

# Every check runs (schemathesis 4's default; `--checks all` on the command line would override the
# per-operation settings below), but for two deliberate departures from what a schema can say, each
# covered by tests of its own.
SCHEMATHESIS_CONFIG = """
# /verify answers every method on purpose (a proxy may forward any): there is no 405 to expect there
# (tests/test_verify.py, tests/test_hardening.py).
[[operations]]
include-path-regex = "^/verify"
checks.unsupported_method.enabled = false
# Nor is a header /verify does not read (x-schemathesis-unknown-property) invalid input: HTTP ignores unknown
# headers, and a proxy forwards the client's. Its own parameters' refusals are tested one by one
# (tests/test_limits.py, tests/test_required_scopes.py, tests/test_verify.py).
checks.negative_data_rejection.enabled = false

# An expiry must lie in the future, which no schema can say: a past expiresAt is rightly a 400
# (tests/test_policy.py). Everything else schema-valid must still be accepted.
[[operations]]
include-path-regex = "^/dashboard/api-keys"
include-method-regex = "^(POST|PATCH)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404, 409]

# A usage range of more than 2,000 buckets, or a since that is not before until, is rightly a 400, which no schema
# can say either (tests/test_usage.py).
[[operations]]
include-path-regex = "usage$"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404]
"""

# A fixed budget per database keeps CI bounded; a fixed seed makes a failure reproducible.
SECONDS = int(os.environ.get("APIKEYS_FUZZ_SECONDS", "40"))
SEED = int(os.environ.get("APIKEYS_FUZZ_SEED", "20261128"))
# The status of an access-log line in gunicorn.conf.py's format: '... "GET /path HTTP/1.1" 500 ...'.
ACCESS_STATUS = re.compile(r'"[A-Z]+ \S* HTTP/[\d.]+" (\d{3}) ')


def test_schemathesis_finds_nothing(tmp_path, database_url):
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(database_url, jwt_secret, tmp_path / "instance")
    with Gunicorn(tmp_path, env, workers=2) as server:
        # A key of another tenant, so /verify is exercised with a valid key while the
        # fuzzer's own tenant ("fuzz") can create, toggle and delete as it likes.
        status, _, created = Http(server.url).request(
            "POST",
            "/dashboard/api-keys",
            {"name": "fuzz verify", "environment": "live"},
            {"Authorization": f"Bearer {token_for(jwt_secret, 'fuzz-verify', 3600)}"},
        )
        assert status == 201
        report = tmp_path / "schemathesis.json"
        command = [
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{server.url}/openapi.json",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-time",
            str(SECONDS),
            "--seed",
            str(SEED),
            # One worker: CPython 3.11.7 (cpython#106905) keeps ast.parse's recursion count per interpreter, not
            # per thread, and Hypothesis parses source in every worker thread as it builds strategies (the lambdas
            # of .filter(), function_digest): two workers racing there die with "SystemError: AST constructor
            # recursion depth mismatch". With one, the phases' threads take turns and never parse at once.
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {token_for(jwt_secret, 'fuzz', 3600)}",
            "--header",
            f"X-Api-Key: {created['data']['fullKey']}",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--no-color",
        ]
        (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
        result = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS * 4 + 120, cwd=tmp_path)
        # Keep the command line (it holds a token and a key) out of pytest's report.
        returncode, output = result.returncode, result.stdout + result.stderr
        del result, command
        for secret in (jwt_secret, created["data"]["secretKey"]):
            output = output.replace(secret, "[secret]")
    summary = [line for line in output.splitlines() if "generated" in line or "passed" in line or "failed" in line]
    print(f"schemathesis on {database_url.split(':')[0]} (seed {SEED}, {SECONDS} s):", *summary[-3:], sep="\n  ")
    assert returncode == 0, output[-6000:]
    assert report.exists()
    assert json.loads(report.read_text())  # the run wrote its report
    # No answer of 500 or more and no traceback anywhere in gunicorn's logs; the access-log lines must
    # have been recognised, or the 5xx check would pass on nothing.
    assert "Traceback" not in server.logs()
    statuses = ACCESS_STATUS.findall(server.access_log.read_text())
    assert statuses, "no access-log line matched ACCESS_STATUS"
    assert [status for status in statuses if status.startswith("5")] == []
