"""Fixtures of the console's browser tests: one Chromium and one service under gunicorn per module."""

from __future__ import annotations

import secrets

import pytest

from tests.console.browser import CHROMIUM
from tests.console.browser import CHROMIUM_ARGS
from tests.console.browser import Session
from tests.console.browser import playwright_or_skip
from tests.servers import Gunicorn
from tests.servers import service_env


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
