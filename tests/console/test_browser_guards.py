"""The console's guards in Chromium: a secret leaves as its dialog closes; a link asks before switching tenants."""

from __future__ import annotations

import pytest

from apikeys.tokens import issue_token
from tests.console.browser import Session
from tests.console.browser import row
from tests.console.browser import sign_in
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


def test_a_link_with_another_tenants_token_asks_before_switching(browser, session, server):
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

    # A fresh tab (nothing stored): the dev link signs in without asking.
    fresh = Session(browser, server)
    try:
        fresh.page.goto(f"/console#token={mine}")
        row(fresh.page, "Alice's key").wait_for()
        assert fresh.page.locator("dialog[open]").count() == 0
        assert fresh.page.url == server.url + "/console#keys"
        assert fresh.console_errors == []
    finally:
        fresh.close()
