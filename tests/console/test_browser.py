"""The console in a real Chromium, driven by Playwright, against the service under gunicorn."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from apikeys.tokens import issue_token
from tests.console.browser import Session
from tests.console.browser import create_key
from tests.console.browser import read_secret_once
from tests.console.browser import row
from tests.console.browser import sign_in
from tests.console.browser import verify
from tests.servers import call
from tests.servers import token_for

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_sign_in_create_verify_regenerate_toggle_delete_sign_out(session, server, tmp_path):
    page = session.page
    context = session.context
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    token = token_for(server.jwt_secret, "acme")
    shown: list[str] = []

    # Sign in with a pasted token.
    sign_in(session, token)
    page.get_by_text("No keys yet").wait_for()
    assert page.locator("#who").inner_text() == "Tenant acme"
    assert token in session.storage()  # sessionStorage, the only place it is kept
    assert context.cookies() == []

    # Create two keys, the second in a screenshot of the dialog; each secret is read once.
    shown.append(create_key(session, "Staging worker", environment="test"))
    row(page, "Staging worker").wait_for()
    create_png = tmp_path / "console-create.png"
    billing = create_key(
        session,
        "Billing backend",
        environment="live",
        expires="2099-12-31T12:00",
        scopes="invoices:read invoices:write",
        meta='{"team": "payments"}',
        screenshot=[create_png],
    )
    shown.append(billing)
    assert billing.startswith("pk_live_")

    # The list: newest first, every column.
    billing_row = row(page, "Billing backend")
    billing_row.wait_for()
    assert page.locator("#keys-body .key-name").all_inner_texts() == ["Billing backend", "Staging worker"]
    cells = billing_row.locator("td").all_inner_texts()
    assert cells[1] == "live"
    assert cells[2] == billing.split(".")[0]  # the public key
    assert cells[3] == "Active"
    assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d", cells[4])  # created, in the browser's zone
    assert cells[5] == "never"  # last used
    assert cells[6] == "2099-12-31 12:00"  # expiry, in the browser's zone (UTC here)
    assert cells[7].split() == ["invoices:read", "invoices:write"]
    assert row(page, "Staging worker").locator("td").all_inner_texts()[6:8] == ["never", "none"]
    assert page.locator("#keys-page").inner_text() == "Page 1 of 1 (2 in all)"

    # The key works where an application presents it, and the list then shows it used.
    status, answer = verify(server, billing)
    assert status == 200, answer
    assert answer["data"]["name"] == "Billing backend"
    page.reload()
    billing_row.wait_for()
    assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d", billing_row.locator("td").nth(5).inner_text())
    keys_png = tmp_path / "console-keys.png"
    page.screenshot(path=keys_png, full_page=True)

    # Regenerate (no grace period): the copy button puts the new key on the clipboard.
    billing_row.get_by_role("button", name="Regenerate Billing backend").click()
    regenerate = page.get_by_role("dialog", name="Regenerate “Billing backend”?")
    assert regenerate.get_by_label("The old secret").input_value() == ""  # stops working now
    regenerate.get_by_role("button", name="Regenerate").click()
    page.get_by_role("dialog", name="Copy your new API key").wait_for()
    page.get_by_role("button", name="Copy key").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    copied = page.evaluate("() => navigator.clipboard.readText()")
    page.evaluate("() => navigator.clipboard.writeText('')")
    rotated = read_secret_once(session, "Billing backend")
    shown.append(rotated)
    assert copied == rotated
    assert rotated != billing and rotated.split(".")[0] == billing.split(".")[0]
    assert verify(server, billing)[0] == 401  # the old secret is refused at once
    assert verify(server, rotated)[0] == 200

    # Disable, then enable.
    billing_row.get_by_role("button", name="Disable Billing backend").click()
    billing_row.get_by_text("Disabled", exact=True).wait_for()
    assert page.locator("#status").inner_text() == "Disabled “Billing backend”."
    assert verify(server, rotated)[0] == 403
    billing_row.get_by_role("button", name="Enable Billing backend").click()
    billing_row.get_by_text("Active", exact=True).wait_for()
    assert verify(server, rotated)[0] == 200

    # Delete, after a confirmation that names the key; Cancel first, which keeps it.
    billing_row.get_by_role("button", name="Delete Billing backend").click()
    confirm = page.get_by_role("dialog", name="Delete “Billing backend”?")
    assert "cannot be undone" in confirm.inner_text()
    confirm.get_by_role("button", name="Cancel").click()
    confirm.wait_for(state="hidden")
    assert verify(server, rotated)[0] == 200
    billing_row.get_by_role("button", name="Delete Billing backend").click()
    confirm.get_by_role("button", name="Delete key").click()
    billing_row.wait_for(state="detached")
    assert page.locator("#keys-body .key-name").all_inner_texts() == ["Staging worker"]
    assert verify(server, rotated)[0] == 401

    # No secret in the browser's storage or cookies, nor in any request the console sent.
    stored = session.storage()
    sent = "\n".join(session.requests)
    for key in shown:
        secret = key.split(".")[1]
        assert secret not in stored
        assert secret not in sent

    # Sign out: the token is gone, and a reload stays on the sign-in page.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert token not in session.storage()
    page.reload()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert not page.get_by_role("button", name="Sign out").is_visible()
    assert session.console_errors == []

    # Nothing secret reached the server's logs: not the key secrets, not the token.
    logs = server.logs()
    assert "/dashboard/api-keys" in logs  # the request log has a line per request
    for key in shown:
        assert key.split(".")[1] not in logs
    assert token not in logs

    # Screenshots in the test's output; the README's copies in docs/ only when asked, so that a
    # test run never changes the checkout (APIKEYS_CONSOLE_SCREENSHOTS=1, then commit them).
    assert keys_png.stat().st_size > 10_000 and create_png.stat().st_size > 10_000
    if os.environ.get("APIKEYS_CONSOLE_SCREENSHOTS") == "1":
        shutil.copyfile(keys_png, DOCS / "console-keys.png")
        shutil.copyfile(create_png, DOCS / "console-create.png")


def test_scopes_expiry_metadata_grace_period_edit_and_audit_log(session, server, tmp_path):
    page = session.page
    token = issue_token(
        {
            "APIKEYS_JWT_ALGORITHMS": ["HS256"],
            "APIKEYS_JWT_SECRET": server.jwt_secret,
            "APIKEYS_JWT_TENANT_CLAIM": "tenantId",
            "APIKEYS_JWT_AUDIENCE": "",
            "APIKEYS_JWT_ISSUER": "",
        },
        "policy",
        600,
        sub="alice@example.com",  # the audit log's actor
    )
    shown: list[str] = []
    sign_in(session, token)

    # Create with an expiry, scopes and metadata; the API gets them as the contract says.
    key = create_key(
        session,
        "Orders API",
        environment="live",
        expires="2099-12-31T12:00",
        scopes="orders:read invoices:*",
        meta='{"team": "billing", "owner": "<b>ops</b>"}',
    )
    shown.append(key)
    orders_row = row(page, "Orders API")
    orders_row.wait_for()
    cells = orders_row.locator("td").all_inner_texts()
    assert cells[6] == "2099-12-31 12:00"  # in the browser's zone, UTC here
    assert cells[7].split() == ["orders:read", "invoices:*"]
    status, answer = verify(server, key)
    assert status == 200, answer
    assert answer["data"]["scopes"] == ["orders:read", "invoices:*"]
    assert answer["data"]["meta"] == {"team": "billing", "owner": "<b>ops</b>"}
    assert answer["data"]["expiresAt"] == "2099-12-31T12:00:00.000Z"

    # Regenerate with a grace period: the previous secret keeps working, and the dialog says until when.
    orders_row.get_by_role("button", name="Regenerate Orders API").click()
    regenerate = page.get_by_role("dialog", name="Regenerate “Orders API”?")
    regenerate.get_by_label("The old secret").select_option("3600")
    regenerate.get_by_role("button", name="Regenerate").click()
    page.get_by_text("The previous secret keeps working until").wait_for()
    graced = read_secret_once(session, "Orders API")
    shown.append(graced)
    assert verify(server, graced)[0] == 200
    assert verify(server, key)[0] == 200

    # Edit the name, scopes, metadata and expiry (cleared).
    orders_row.get_by_role("button", name="Edit Orders API").click()
    edit = page.get_by_role("dialog", name="Edit “Orders API”")
    assert edit.get_by_label("Scopes").input_value() == "orders:read invoices:*"
    assert json.loads(edit.get_by_label("Metadata").input_value()) == {"team": "billing", "owner": "<b>ops</b>"}
    assert edit.get_by_label("Expires (your local time)").input_value() == "2099-12-31T12:00"
    edit.get_by_label("Name").fill("Orders API <v2>")
    edit.get_by_label("Scopes").fill("orders:*")
    edit.get_by_label("Metadata").fill('{"team": "payments"}')
    edit.get_by_label("Expires (your local time)").fill("")
    edit.get_by_role("button", name="Save changes").click()
    edit.wait_for(state="hidden")
    edited_row = row(page, "Orders API <v2>")  # a name shows as typed: text, not markup
    edited_row.wait_for()
    cells = edited_row.locator("td").all_inner_texts()
    assert cells[6] == "never" and cells[7] == "orders:*"
    answer = verify(server, graced)[1]
    assert answer["data"]["name"] == "Orders API <v2>" and answer["data"]["scopes"] == ["orders:*"]
    assert answer["data"]["meta"] == {"team": "payments"} and answer["data"]["expiresAt"] is None

    # Invalid input is refused in the dialog with the API's message, and the dialog stays open.
    edited_row.get_by_role("button", name="Edit Orders API <v2>").click()
    edit = page.get_by_role("dialog", name="Edit “Orders API <v2>”")
    edit.get_by_label("Scopes").fill("has-a-bang!")
    edit.get_by_role("button", name="Save changes").click()
    edit.get_by_role("alert").wait_for()
    assert "scopes" in edit.get_by_role("alert").inner_text()
    edit.get_by_label("Metadata").fill("[1, 2]")
    edit.get_by_role("button", name="Save changes").click()
    assert edit.get_by_role("alert").inner_text() == 'Metadata must be a JSON object, like {"team": "billing"}.'
    edit.get_by_role("button", name="Cancel").click()

    # Disable, enable, delete: then the audit log shows every change, newest first, by the token's subject.
    edited_row.get_by_role("button", name="Disable Orders API <v2>").click()
    edited_row.get_by_text("Disabled", exact=True).wait_for()
    edited_row.get_by_role("button", name="Enable Orders API <v2>").click()
    edited_row.get_by_text("Active", exact=True).wait_for()
    edited_row.get_by_role("button", name="Delete Orders API <v2>").click()
    page.get_by_role("dialog", name="Delete “Orders API <v2>”?").get_by_role("button", name="Delete key").click()
    edited_row.wait_for(state="detached")

    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("heading", name="Audit log").wait_for()
    page.locator("#audit-body tr").first.wait_for()
    assert page.locator("#audit-body td[data-label=Action]").all_inner_texts() == [
        "key.deleted",
        "key.enabled",
        "key.disabled",
        "key.updated",
        "key.regenerated",
        "key.created",
    ]
    assert set(page.locator("#audit-body td[data-label=Actor]").all_inner_texts()) == {"alice@example.com"}
    assert page.locator("#audit-page").inner_text() == "Page 1 of 1 (6 in all)"
    page.screenshot(path=tmp_path / "console-audit.png", full_page=True)
    page_text = session.page_text()
    stored = session.storage()
    for shown_key in shown:
        assert shown_key.split(".")[1] not in page_text + stored
    page.get_by_role("link", name="Keys").click()
    page.get_by_role("heading", name="API keys").wait_for()
    assert session.console_errors == []


def test_a_refused_or_expired_token_returns_to_the_sign_in_page_with_the_servers_message(session, server):
    page = session.page
    message = page.locator("#signin-error")

    # A pasted token that is not a JWT at all.
    _, refused = call(server.url, "GET", "/dashboard/api-keys", token="not-a-token")
    sign_in_page = page.get_by_role("heading", name="Sign in", exact=True)
    page.goto("/console")
    page.get_by_label("Bearer token (JWT)").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    message.wait_for()
    assert sign_in_page.is_visible()
    assert message.inner_text() == f"The server refused the token: {refused['message']} Sign in again."
    assert "not-a-token" not in session.storage()

    # A token that expires while the console is open: the next action returns to the sign-in page.
    short = token_for(server.jwt_secret, "acme", ttl=8)  # time to sign in on a slow machine; then it expires
    sign_in(session, short)
    assert message.is_hidden()
    time.sleep(max(0.0, jwt_expiry(short) - time.time() + 1.1))
    status, refused_late = call(server.url, "GET", "/dashboard/api-keys", token=short)
    assert status == 401
    page.get_by_role("button", name="New key").click()
    page.get_by_role("dialog", name="New API key").get_by_label("Name").fill("Too late")
    page.get_by_role("button", name="Create key").click()
    message.wait_for()
    assert sign_in_page.is_visible()
    assert not page.locator("dialog[open]").count()
    assert refused_late["message"] in message.inner_text()
    assert short not in session.storage()

    # A link with an expired token, taken on the user's yes: the same, and the token leaves the address bar.
    expired = token_for(server.jwt_secret, "acme", ttl=-60)
    _, refused = call(server.url, "GET", "/dashboard/api-keys", token=expired)
    page.goto(f"/console#token={expired}")
    ask = page.get_by_role("dialog", name="Sign in from this link?")
    ask.get_by_role("button", name="Sign in", exact=True).click()
    message.wait_for()
    assert sign_in_page.is_visible()
    assert refused["message"] in message.inner_text()
    assert "token=" not in page.url
    assert expired not in session.storage()
    assert session.console_errors == []

    # The API says what is wrong, and the console passes it on.
    assert "expired" in message.inner_text()


def jwt_expiry(token: str) -> int:
    """Read a token's exp claim (no check: the test made the token)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def test_the_dev_link_signs_in_and_leaves_no_token_in_the_address_bar(browser, dev_server):
    # The link `make run` prints, opened as its reader would: it signs in without asking.
    session = Session(browser, dev_server)
    try:
        page = session.page
        token = dev_server.link.split("#token=", 1)[1]
        page.goto(dev_server.link)
        page.get_by_role("heading", name="API keys").wait_for()
        assert page.url == dev_server.url + "/console#keys"
        page.go_back()  # the entry was replaced, not pushed: Back cannot bring the token back
        assert page.url == "about:blank"
        page.go_forward()
        page.get_by_role("heading", name="API keys").wait_for()
        assert page.url == dev_server.url + "/console#keys"
        assert token in session.storage()
        # The fragment never left the browser: no request the console made carries the token in its URL.
        assert not [line for line in session.requests if token in line.split(" ")[1]]
    finally:
        session.close()


def test_keyboard_and_phone_width(browser, server, tmp_path):
    session = Session(browser, server, viewport={"width": 360, "height": 740}, has_touch=True)
    try:
        page = session.page
        token = token_for(server.jwt_secret, "phone")
        for name in ("Phone key with a rather long name to wrap", "Second"):
            status, _ = call(
                server.url, "POST", "/dashboard/api-keys", token=token, body={"name": name, "environment": "live"}
            )
            assert status == 201
        page.goto(f"/console#token={token}")
        # A link asks before it signs in, and the keyboard answers: the safe answer has the focus.
        page.get_by_role("dialog", name="Sign in from this link?").wait_for()
        assert page.evaluate("() => document.activeElement.id") == "link-decline"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        row(page, "Second").wait_for()
        # Readable at 360 px: nothing wider than the screen, so no sideways scrolling.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        assert page.locator("#keys-table thead").bounding_box()["height"] <= 1  # rows are cards with labels
        page.screenshot(path=tmp_path / "console-phone.png", full_page=True)
        overflowing = page.evaluate(
            """() => [...document.querySelectorAll('#keys-body td')]
                .filter((cell) => cell.scrollWidth > cell.clientWidth).map((cell) => cell.dataset.label)"""
        )
        assert overflowing == []  # every value fits its card (long public keys wrap)

        # Keyboard only: open the dialog, type, submit with Enter, close with Escape.
        page.get_by_role("button", name="New key").focus()
        assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") == "solid"
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="New API key")
        dialog.wait_for()
        assert page.evaluate("() => document.activeElement.id") == "create-name"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        page.keyboard.type("Typed key")
        page.keyboard.press("Enter")
        secret_dialog = page.get_by_role("dialog", name="Copy your new API key")
        secret_dialog.wait_for()
        full_key = page.locator("#secret-value").input_value()
        assert page.evaluate("() => document.activeElement.id") == "secret-value"
        page.keyboard.press("Escape")
        secret_dialog.wait_for(state="hidden")
        assert full_key.split(".")[1] not in session.page_text()
        row(page, "Typed key").wait_for()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        assert session.console_errors == []
    finally:
        session.close()


def test_pages_of_keys(session, server):
    page = session.page
    token = token_for(server.jwt_secret, "many")
    for number in range(21):
        status, _ = call(
            server.url,
            "POST",
            "/dashboard/api-keys",
            token=token,
            body={"name": f"Key {number}", "environment": "test"},
        )
        assert status == 201
    sign_in(session, token)
    row(page, "Key 20").wait_for()
    names = page.locator("#keys-body .key-name")
    assert names.count() == 20 and names.first.inner_text() == "Key 20"  # newest first
    assert page.locator("#keys-page").inner_text() == "Page 1 of 2 (21 in all)"
    assert page.get_by_role("button", name="Previous").is_disabled()
    page.get_by_role("button", name="Next").click()
    row(page, "Key 0").wait_for()
    assert names.all_inner_texts() == ["Key 0"]
    assert page.get_by_role("button", name="Next").is_disabled()

    # Deleting the only key of the last page goes back a page.
    row(page, "Key 0").get_by_role("button", name="Delete Key 0").click()
    page.get_by_role("dialog", name="Delete “Key 0”?").get_by_role("button", name="Delete key").click()
    page.get_by_text("Page 1 of 1 (20 in all)").wait_for()
    assert names.count() == 20
