"""What the console's browser tests share: Debian's Chromium, a recording session, and a person's steps.

Debian's /usr/bin/chromium is used as it is (never `playwright install`). Without it the
tests are skipped with a line saying so, except under CI (CI set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000


def playwright_or_skip():
    """Return Playwright's sync_playwright, or skip (fail under CI) saying what is missing."""
    problem = None
    if not os.path.exists(CHROMIUM):
        problem = f"{CHROMIUM} is missing: install Debian's chromium package to run the console's browser tests"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = problem or "Playwright is not installed: run make .venv/bin/.installed-test"
        sync_playwright = None
    if problem:
        if os.environ.get("CI"):  # .ci/run sets it
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return sync_playwright


class Session:
    """One browser context on the console, recording every request it sends."""

    def __init__(self, browser, server, **options):
        self.server = server
        options = {"timezone_id": "UTC", "locale": "en-GB", "viewport": {"width": 1280, "height": 900}, **options}
        self.context = browser.new_context(base_url=server.url, **options)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.requests: list[str] = []
        self.context.on("request", self._record)
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", self._console_message)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def _console_message(self, message) -> None:
        # Script errors and policy violations count; Chromium's note on every 4xx answer
        # ("Failed to load resource") does not: the tests ask for some of those on purpose.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.console_errors.append(message.text)

    def _record(self, request) -> None:
        self.requests.append(f"{request.method} {request.url} {json.dumps(request.headers)} {request.post_data or ''}")

    def storage(self) -> str:
        """Everything the browser keeps for the console: both storages and the cookies."""
        stored = self.page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
        return stored + json.dumps(self.context.cookies())

    def page_text(self) -> str:
        """The page's text and the values of its fields, where a secret could linger."""
        return self.page.evaluate(
            """() => document.documentElement.textContent + [...document.querySelectorAll('input, textarea')]
                .map((field) => field.value).join('\\n')"""
        )

    def close(self) -> None:
        self.context.close()


def verify(server, full_key: str) -> tuple[int, dict]:
    """Call /verify as an application would, with urllib."""
    request = urllib.request.Request(server.url + "/verify", headers={"X-Api-Key": full_key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def row(page, name: str):
    """The list's row for the key named exactly ``name``."""
    return page.locator("#keys-body tr", has=page.locator(".key-name", has_text=re.compile(f"^{re.escape(name)}$")))


def read_secret_once(session: Session, name: str) -> str:
    """Read the full key from the dialog that shows it, close the dialog, and check it is gone."""
    page = session.page
    dialog = page.get_by_role("dialog", name="Copy your new API key")
    dialog.wait_for()
    assert "only time this key is shown" in dialog.inner_text()
    assert name in page.locator("#secret-name").inner_text()
    full_key = page.locator("#secret-value").input_value()
    assert re.fullmatch(r"pk_(live|test)_\w+\.sk_(live|test)_\w+", full_key)
    page.get_by_role("button", name="I have copied it").click()
    dialog.wait_for(state="hidden")
    assert full_key not in session.page_text()  # shown once: closed, it is nowhere on the page
    return full_key


def sign_in(session: Session, token: str) -> None:
    """Open the console and sign in by pasting ``token``, as a person would."""
    page = session.page
    page.goto("/console")
    page.get_by_label("Bearer token (JWT)").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="API keys").wait_for()


def create_key(session: Session, name: str, *, environment="test", expires="", scopes="", meta="", screenshot=None):
    """Create a key through the dialog and return its full key, read once from the screen."""
    page = session.page
    page.get_by_role("button", name="New key").click()
    dialog = page.get_by_role("dialog", name="New API key")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Environment").select_option(environment)
    if expires:
        dialog.get_by_label("Expires (optional, your local time)").fill(expires)
    dialog.get_by_label("Scopes (optional)").fill(scopes)
    dialog.get_by_label("Metadata (optional)").fill(meta)
    for path in screenshot or []:
        page.screenshot(path=path)
    dialog.get_by_role("button", name="Create key").click()
    # Either the key is shown, or the dialog says why not: fail with the API's words, not a timeout.
    page.locator("#secret-dialog[open], #create-error:not([hidden])").first.wait_for()
    assert page.locator("#create-error").is_hidden(), page.locator("#create-error").inner_text()
    return read_secret_once(session, name)
