"""Fixtures of the console's browser tests: one Chromium and one service under gunicorn per module."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
from types import SimpleNamespace

import pytest

from tests.console.browser import CHROMIUM
from tests.console.browser import CHROMIUM_ARGS
from tests.console.browser import Session
from tests.console.browser import playwright_or_skip
from tests.servers import ROOT
from tests.servers import Gunicorn
from tests.servers import free_port
from tests.servers import inherited_env
from tests.servers import service_env
from tests.servers import wait_for


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, headless."""
    sync_playwright = playwright_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The service under gunicorn on a SQLite file, with its logs kept for the secret check."""
    directory = tmp_path_factory.mktemp("console")
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(
        f"sqlite:///{directory / 'apikeys.sqlite3'}",
        jwt_secret,
        directory / "instance",
        HOME=str(directory),  # a gunicorn control socket of its own
    )
    with Gunicorn(directory, env, workers=1) as running:
        running.jwt_secret = jwt_secret
        yield running


@pytest.fixture
def session(browser, server):
    """A fresh browser context (no storage, no cookies) with one page on the console."""
    opened = Session(browser, server)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    """`apikeys serve --dev` as `make run` starts it, with the console link it printed (``link``).

    Its output goes to a file of this fixture's own, not to the log scan: printing a token is
    what --dev is for. Tests read the link from it and never show it in a report.
    """
    directory = tmp_path_factory.mktemp("console-dev")
    port = free_port()
    env = inherited_env() | {"APIKEYS_INSTANCE_PATH": str(directory / "instance"), "HOME": str(directory)}
    command = [str(ROOT / ".venv" / "bin" / "apikeys"), "serve", "--dev", "--port", str(port), "--workers", "1"]
    with open(directory / "stdout", "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/healthz", process=process)
        # gunicorn runs when_ready (the banner) before it starts the workers: printed once /healthz answers.
        printed = re.search(r"Console, signed in as 'dev':\s+(\S+)", (directory / "stdout").read_text())
        assert printed, "serve --dev printed no console link"
        yield SimpleNamespace(url=url, link=printed.group(1), env=env)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
