"""examples/systemd/apikeys.service: systemd accepts it as shipped, with the hardening docs/deployment.md promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

UNIT = ROOT / "examples" / "systemd" / "apikeys.service"
SHIPPED_APIKEYS = "/opt/apikeys/.venv/bin/apikeys"
THIS_APIKEYS = str(Path(sys.executable).parent / "apikeys")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing: .ci/run must install Debian's `systemd` package")
        pytest.skip("systemd-analyze is not installed here (CI installs it: Debian's `systemd` package)")
    return found


def service_settings() -> dict[str, list[str]]:
    """Every Key=value of [Service], each key with all its values in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = systemd_analyze()
    text = UNIT.read_text()
    assert text.count(SHIPPED_APIKEYS) == 1
    # verify checks that ExecStart's program exists: the copy runs this venv's apikeys, and differs in nothing else.
    copy = tmp_path / "apikeys.service"
    copy.write_text(text.replace(SHIPPED_APIKEYS, THIS_APIKEYS))
    assert copy.read_text().replace(THIS_APIKEYS, SHIPPED_APIKEYS) == text
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # An unknown key or value is only a warning (exit status 0): any line about the unit fails the test.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "apikeys.service" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []


def test_the_unit_runs_apikeys_serve_on_loopback_behind_the_production_nginx():
    settings = service_settings()
    assert settings["ExecStart"] == [f"{SHIPPED_APIKEYS} serve --host 127.0.0.1 --port 8000"]
    production = (ROOT / "examples" / "nginx" / "production.conf").read_text()
    assert "server 127.0.0.1:8000;" in production  # the upstream nginx passes the dashboard API to
    assert settings["Restart"] == ["on-failure"]
    assert settings["EnvironmentFile"] == ["/etc/apikeys/apikeys.env"]


def test_the_unit_has_the_documented_hardening():
    settings = service_settings()
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "apikeys",
        "StateDirectoryMode": "0700",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    assert {key: settings.get(key, [None])[-1] for key in expected} == expected
    assert "APIKEYS_INSTANCE_PATH=/var/lib/apikeys" in settings["Environment"]
    # The gunicorn control socket stays off: no GUNICORN_CONTROL_SOCKET, so no $HOME/.gunicorn to write.
    assert not any(value.startswith("GUNICORN_CONTROL_SOCKET") for value in settings["Environment"])
