"""The console's guards in Chromium: a secret leaves as its dialog closes; a link asks before it signs in."""

from __future__ import annotations

import subprocess

import pytest

from apikeys.tokens import issue_token
from tests.console.browser import Session
from tests.console.browser import row
from tests.console.browser import sign_in
from tests.servers import ROOT
from tests.servers import call
from tests.servers import token_for

pytestmark = pytest.mark.slow

# Each way the dialog showing a new key can close, run inside the page. The check reads the page
# in the same task, before any queued event (the dialog's close event is one) can run: what the
# user sees the moment the dialog is gone, and what a browser that runs that event late shows.
CLOSE_THE_SECRET = {
    "I have copied it": "document.getElementById('secret-done').click()",
    # requestClose() takes the path of Escape: cancel, then close.
    "Escape": "document.getElementById('secret-dialog').requestClose()",
    "sign-out": "document.getElementById('sign-out').click()",
}


@pytest.mark.parametrize("way", list(CLOSE_THE_SECRET))
def test_the_full_key_leaves_the_page_as_its_dialog_closes(session, server, way):
    page = session.page
    sign_in(session, token_for(server.jwt_secret, "secrets"))
    page.get_by_role("button", name="New key").click()
    page.get_by_role("dialog", name="New API key").get_by_label("Name").fill("Shown once")
    page.get_by_role("button", name="Create key").click()
    page.get_by_role("dialog", name="Copy your new API key").wait_for()
    full_key = page.locator("#secret-value").input_value()
    assert full_key.startswith("pk_test_")

    after = page.evaluate(
        f"""() => {{
            {CLOSE_THE_SECRET[way]};
            const fields = [...document.querySelectorAll('input, textarea')].map((field) => field.value);
            return {{
                open: document.getElementById('secret-dialog').open,
                page: document.documentElement.textContent + fields.join('\\n'),
            }};
        }}"""
    )
    assert after["open"] is False
    assert full_key.split(".")[1] not in after["page"]
    assert full_key.split(".")[1] not in session.page_text()  # nor once the queued events have run
    assert session.console_errors == []


def signed_token(server, tenant: str, subject: str) -> str:
    """A dashboard token for ``tenant`` whose subject the switch dialog can name."""
    config = {
        "APIKEYS_JWT_ALGORITHMS": ["HS256"],
        "APIKEYS_JWT_SECRET": server.jwt_secret,
        "APIKEYS_JWT_TENANT_CLAIM": "tenantId",
        "APIKEYS_JWT_AUDIENCE": "",
        "APIKEYS_JWT_ISSUER": "",
    }
    return issue_token(config, tenant, 600, sub=subject)


def test_a_link_with_another_tenants_token_asks_before_switching(session, server):
    page = session.page
    mine = signed_token(server, "tenant-a", "alice@example.com")
    theirs = signed_token(server, "tenant-b", "mallory@example.com")
    for token, name in ((mine, "Alice's key"), (theirs, "Mallory's key")):
        body = {"name": name, "environment": "test"}
        status, _ = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
        assert status == 201
    sign_in(session, mine)
    row(page, "Alice's key").wait_for()
    ask = page.get_by_role("dialog", name="Switch tenants?")

    def still_alice():
        assert page.locator("#who").inner_text() == "Tenant tenant-a"
        assert page.locator("#keys-body .key-name").all_inner_texts() == ["Alice's key"]
        assert mine in session.storage() and theirs not in session.storage()

    # A link followed in this tab (the fragment changes: no reload): the page asks, naming who
    # the link signs in as (never the token), and meanwhile shows Alice's keys.
    page.goto(f"/console#token={theirs}")
    ask.wait_for()
    text = ask.inner_text()
    assert "tenant “tenant-b” (subject “mallory@example.com”)" in text
    assert "You are signed in as tenant “tenant-a”" in text
    assert theirs not in text
    assert "token=" not in page.url  # gone from the address bar and the history entry at once
    still_alice()

    # Declined: nothing changes, and a reload does not ask again.
    ask.get_by_role("button", name="Stay signed in").click()
    ask.wait_for(state="hidden")
    still_alice()
    page.reload()
    row(page, "Alice's key").wait_for()
    assert not ask.is_visible()
    still_alice()

    # Escape declines too; this time the link is loaded afresh (from another page).
    page.goto("about:blank")
    page.goto(f"/console#token={theirs}")
    ask.wait_for()
    row(page, "Alice's key").wait_for()
    page.keyboard.press("Escape")
    ask.wait_for(state="hidden")
    still_alice()

    # Accepted: Mallory's tenant, with Alice's token gone.
    page.goto("about:blank")
    page.goto(f"/console#token={theirs}")
    ask.get_by_role("button", name="Switch").click()
    row(page, "Mallory's key").wait_for()
    assert page.locator("#who").inner_text() == "Tenant tenant-b"
    assert page.locator("#keys-body .key-name").all_inner_texts() == ["Mallory's key"]
    assert theirs in session.storage() and mine not in session.storage()
    assert page.url == server.url + "/console#keys"

    # The link of the token already in use asks nothing: it only leaves the address bar.
    page.goto(f"/console#token={theirs}")
    page.wait_for_url(server.url + "/console#keys")
    row(page, "Mallory's key").wait_for()
    assert not ask.is_visible()
    assert session.console_errors == []


def sent_with(session: Session, token: str) -> list[str]:
    """The requests the browser sent that carry ``token`` anywhere (URL, headers or body)."""
    return [line for line in session.requests if token in line]


def test_a_link_in_a_fresh_tab_asks_and_a_no_leaves_it_signed_out(session, server):
    page = session.page
    theirs = signed_token(server, "tenant-m", "mallory@example.com")
    ask = page.get_by_role("dialog", name="Sign in from this link?")
    signed_out = page.get_by_role("heading", name="Sign in", exact=True)

    # Opened from another site in a new tab: nothing stored, so no tenant to compare with.
    # The page asks, naming who the link signs in as (never the token), and sends nothing yet.
    page.goto(f"/console#token={theirs}")
    ask.wait_for()
    text = ask.inner_text()
    assert "signs in as tenant “tenant-m” (subject “mallory@example.com”)" in text
    assert theirs not in text
    assert "token=" not in page.url  # gone from the address bar and the history entry at once
    assert theirs not in session.storage()
    assert sent_with(session, theirs) == []

    # Declined: signed out, nothing stored, and a reload does not ask again.
    ask.get_by_role("button", name="Don't sign in").click()
    ask.wait_for(state="hidden")
    signed_out.wait_for()
    assert theirs not in session.storage()
    page.reload()
    signed_out.wait_for()
    assert not ask.is_visible()

    # A link followed in the signed-out page (the fragment changes, no reload) asks as well;
    # Escape declines too.
    page.goto(f"/console#token={theirs}")
    ask.wait_for()
    page.keyboard.press("Escape")
    ask.wait_for(state="hidden")
    signed_out.wait_for()
    assert page.locator("#nav").is_hidden()
    assert theirs not in session.storage()
    assert sent_with(session, theirs) == []
    assert session.console_errors == []


def test_a_link_in_a_fresh_tab_signs_in_once_the_user_says_yes(session, server):
    page = session.page
    theirs = signed_token(server, "tenant-y", "yvonne@example.com")
    body = {"name": "Y's key", "environment": "test"}
    status, _ = call(server.url, "POST", "/dashboard/api-keys", token=theirs, body=body)
    assert status == 201
    page.goto(f"/console#token={theirs}")
    ask = page.get_by_role("dialog", name="Sign in from this link?")
    ask.wait_for()
    assert "tenant “tenant-y”" in ask.inner_text()
    ask.get_by_role("button", name="Sign in", exact=True).click()
    row(page, "Y's key").wait_for()
    assert page.locator("#who").inner_text() == "Tenant tenant-y"
    assert theirs in session.storage()
    assert page.url == server.url + "/console#keys"
    assert session.console_errors == []


def test_the_link_make_run_prints_signs_in_at_once(browser, dev_server):
    # `make run` (serve --dev) prints a link for the person at that terminal: it signs a fresh
    # tab in without asking. A link with another tenant's token still asks before switching.
    dev = Session(browser, dev_server)
    try:
        page = dev.page
        page.goto(dev_server.link)
        page.get_by_role("heading", name="API keys").wait_for()
        assert page.locator("#who").inner_text() == "Tenant dev"
        assert page.locator("dialog[open]").count() == 0
        assert page.url == dev_server.url + "/console#keys"

        made = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "apikeys"), "token", "--tenant", "other"],
            cwd=ROOT,
            env=dev_server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        page.goto(f"/console#token={made.stdout.strip()}")
        page.get_by_role("dialog", name="Switch tenants?").wait_for()
        assert page.locator("#who").inner_text() == "Tenant dev"
        assert dev.console_errors == []
    finally:
        dev.close()
