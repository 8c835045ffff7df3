"""A key's rate limit and quota in the console, in Chromium: set, changed, removed, refused, shown as stored."""

from __future__ import annotations

import json

import pytest

from tests.console.browser import Session
from tests.console.browser import read_secret_once
from tests.console.browser import row
from tests.console.browser import sign_in
from tests.console.browser import verify
from tests.servers import call
from tests.servers import token_for

pytestmark = pytest.mark.slow


def api_key(server, token: str, name: str) -> dict:
    """The key named ``name`` as the API shows it (GET of the key, found through the list)."""
    status, listed = call(server.url, "GET", "/dashboard/api-keys?limit=100", token=token)
    assert status == 200, listed
    [item] = [item for item in listed["data"]["items"] if item["name"] == name]
    status, answer = call(server.url, "GET", f"/dashboard/api-keys/{item['id']}", token=token)
    assert status == 200, answer
    return answer["data"]


def sent_bodies(page, method: str) -> list[dict]:
    """Start recording the JSON bodies the page sends with ``method`` to the keys API."""
    bodies: list[dict] = []

    def record(request) -> None:
        if request.method == method and "/dashboard/api-keys" in request.url:
            bodies.append(json.loads(request.post_data or "null"))

    page.on("request", record)
    return bodies


def fill_limits(dialog, *, requests="", per="1", unit="minutes", credits_left="", refill="", refill_to="") -> None:
    """Type a rate limit and a quota into the create or edit dialog, as a person would."""
    dialog.get_by_label("Requests", exact=True).fill(requests)
    dialog.get_by_label("Per", exact=True).fill(per)
    dialog.get_by_label("Unit", exact=True).select_option(unit)
    dialog.get_by_label("Credits left", exact=True).fill(credits_left)
    dialog.get_by_label("Refill", exact=True).select_option(refill)
    dialog.get_by_label("Refill to", exact=True).fill(refill_to)


def shown_limits(dialog) -> dict:
    """What the edit dialog shows in its limit fields."""
    labels = ("Requests", "Per", "Unit", "Credits left", "Refill", "Refill to")
    return {label: dialog.get_by_label(label, exact=True).input_value() for label in labels}


def limits_text(page, name: str) -> str:
    return row(page, name).locator("td[data-label=Limits]").inner_text()


def test_create_change_and_remove_limits_and_the_api_has_exactly_those(session, server):
    page = session.page
    token = token_for(server.jwt_secret, "limits")
    sign_in(session, token)
    patches = sent_bodies(page, "PATCH")

    # Create with a rate limit of 100 a minute and 5,000 credits refilled daily.
    page.get_by_role("button", name="New key").click()
    create = page.get_by_role("dialog", name="New API key")
    create.get_by_label("Name").fill("Metered")
    fill_limits(create, requests="100", per="1", unit="minutes", credits_left="5000", refill="daily", refill_to="5000")
    create.get_by_role("button", name="Create key").click()
    full_key = read_secret_once(session, "Metered")
    key = api_key(server, token, "Metered")
    assert key["rateLimit"] == {"limit": 100, "periodSeconds": 60}
    assert key["quota"] == {"remaining": 5000, "refillAmount": 5000, "refillInterval": "daily"}
    row(page, "Metered").wait_for()
    assert limits_text(page, "Metered").splitlines() == [
        "Rate: 100 per minute",
        "Credits: 5,000 left, refill to 5,000 daily",
    ]

    # Edit: the form shows them; 20 per 10 seconds, and the quota emptied (removed).
    row(page, "Metered").get_by_role("button", name="Edit Metered").click()
    edit = page.get_by_role("dialog", name="Edit “Metered”")
    assert shown_limits(edit) == {
        "Requests": "100",
        "Per": "1",
        "Unit": "minutes",
        "Credits left": "5000",
        "Refill": "daily",
        "Refill to": "5000",
    }
    fill_limits(edit, requests="20", per="10", unit="seconds")
    edit.get_by_role("button", name="Save changes").click()
    edit.wait_for(state="hidden")
    assert patches == [{"rateLimit": {"limit": 20, "periodSeconds": 10}, "quota": None}]  # only what changed
    key = api_key(server, token, "Metered")
    assert key["rateLimit"] == {"limit": 20, "periodSeconds": 10}
    assert key["quota"] is None
    page.get_by_text("Rate: 20 per 10 seconds").wait_for()
    assert limits_text(page, "Metered") == "Rate: 20 per 10 seconds"
    status, answer = verify(server, full_key)
    assert status == 200, answer  # the key still works, now with its new limit

    # Edit again: Requests emptied removes the rate limit; a new quota of 3 credits, never refilled.
    row(page, "Metered").get_by_role("button", name="Edit Metered").click()
    assert shown_limits(edit)["Requests"] == "20" and shown_limits(edit)["Credits left"] == ""
    fill_limits(edit, requests="", per="10", unit="seconds", credits_left="3")
    edit.get_by_role("button", name="Save changes").click()
    edit.wait_for(state="hidden")
    assert patches[1:] == [{"rateLimit": None, "quota": {"remaining": 3, "refillAmount": None, "refillInterval": None}}]
    key = api_key(server, token, "Metered")
    assert key["rateLimit"] is None
    assert key["quota"] == {"remaining": 3, "refillAmount": None, "refillInterval": None}
    page.get_by_text("Credits: 3 left, no refill").wait_for()
    assert limits_text(page, "Metered") == "Credits: 3 left, no refill"

    # And the last limit goes the same way: the key is unlimited, and the list says so.
    row(page, "Metered").get_by_role("button", name="Edit Metered").click()
    fill_limits(edit, credits_left="")
    edit.get_by_role("button", name="Save changes").click()
    edit.wait_for(state="hidden")
    assert patches[2:] == [{"quota": None}]
    key = api_key(server, token, "Metered")
    assert key["rateLimit"] is None and key["quota"] is None
    row(page, "Metered").locator("td[data-label=Limits]", has_text="none").wait_for()
    assert session.console_errors == []


def test_the_list_shows_the_credits_the_api_has_left_after_verifications(session, server):
    page = session.page
    token = token_for(server.jwt_secret, "credits")
    body = {
        "name": "Pay per call",
        "environment": "test",
        "quota": {"remaining": 10, "refillAmount": None, "refillInterval": None},
    }
    status, created = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
    assert status == 201, created
    full_key = created["data"]["fullKey"]
    sign_in(session, token)
    row(page, "Pay per call").wait_for()
    assert limits_text(page, "Pay per call") == "Credits: 10 left, no refill"

    for _ in range(3):
        status, answer = verify(server, full_key)
        assert status == 200, answer
    page.reload()
    row(page, "Pay per call").wait_for()
    assert api_key(server, token, "Pay per call")["quota"]["remaining"] == 7
    assert limits_text(page, "Pay per call") == "Credits: 7 left, no refill"

    # An edit that leaves the quota alone sends none: a credit used while the dialog is open stays used.
    patches = sent_bodies(page, "PATCH")
    row(page, "Pay per call").get_by_role("button", name="Edit Pay per call").click()
    edit = page.get_by_role("dialog", name="Edit “Pay per call”")
    assert edit.get_by_label("Credits left", exact=True).input_value() == "7"
    assert verify(server, full_key)[0] == 200  # 6 left now
    edit.get_by_label("Name").fill("Pay per call v2")
    edit.get_by_role("button", name="Save changes").click()
    edit.wait_for(state="hidden")
    assert patches == [{"name": "Pay per call v2"}]
    row(page, "Pay per call v2").wait_for()
    assert api_key(server, token, "Pay per call v2")["quota"]["remaining"] == 6
    assert limits_text(page, "Pay per call v2") == "Credits: 6 left, no refill"
    assert session.console_errors == []


def shown_as(refusal: dict) -> list[str]:
    """The lines the console shows for an API refusal: its message, then one line a field."""
    return [refusal["message"], *(f"{field}: {' '.join(texts)}" for field, texts in refusal["errors"].items())]


def test_a_bad_limit_shows_the_apis_field_error_and_writes_nothing(session, server):
    page = session.page
    token = token_for(server.jwt_secret, "refused")
    posts = sent_bodies(page, "POST")
    patches = sent_bodies(page, "PATCH")
    sign_in(session, token)

    # A limit of 0 requests: the API's 400 names the field, the dialog shows it and stays open.
    page.get_by_role("button", name="New key").click()
    create = page.get_by_role("dialog", name="New API key")
    create.get_by_label("Name").fill("Zero")
    fill_limits(create, requests="0")
    create.get_by_role("button", name="Create key").click()
    alert = create.get_by_role("alert")
    alert.wait_for()
    bad = {"name": "Zero", "environment": "test", "rateLimit": {"limit": 0, "periodSeconds": 60}}
    assert posts == [bad]
    status, refused = call(server.url, "POST", "/dashboard/api-keys", token=token, body=bad)
    assert status == 400 and "rateLimit" in refused["message"]
    assert alert.inner_text().splitlines() == shown_as(refused)
    assert create.is_visible()
    assert call(server.url, "GET", "/dashboard/api-keys", token=token)[1]["data"]["total"] == 0

    # A refill with no amount is caught before anything is sent.
    fill_limits(create, credits_left="10", refill="monthly", refill_to="")
    create.get_by_role("button", name="Create key").click()
    alert.get_by_text("Say how many credits a refill sets").wait_for()
    assert len(posts) == 1
    create.get_by_role("button", name="Cancel").click()

    # Editing a key to a negative quota: refused the same way, and the key keeps its limits.
    body = {"name": "Kept", "environment": "test", "rateLimit": {"limit": 5, "periodSeconds": 1}}
    status, created = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
    assert status == 201, created
    page.reload()
    row(page, "Kept").get_by_role("button", name="Edit Kept").click()
    edit = page.get_by_role("dialog", name="Edit “Kept”")
    fill_limits(edit, requests="5", per="1", unit="seconds", credits_left="-1")
    edit.get_by_role("button", name="Save changes").click()
    edit.get_by_role("alert").wait_for()
    assert patches == [{"quota": {"remaining": -1, "refillAmount": None, "refillInterval": None}}]
    status, refused = call(
        server.url, "PATCH", f"/dashboard/api-keys/{created['data']['id']}", token=token, body=patches[0]
    )
    assert status == 400 and "quota" in refused["message"]
    assert edit.get_by_role("alert").inner_text().splitlines() == shown_as(refused)
    assert edit.is_visible()
    key = api_key(server, token, "Kept")
    assert key["rateLimit"] == {"limit": 5, "periodSeconds": 1} and key["quota"] is None
    status, audit = call(server.url, "GET", "/dashboard/audit-log", token=token)
    assert [entry["action"] for entry in audit["data"]["items"]] == ["key.created"]
    assert session.console_errors == []


def test_limits_fit_a_phone_screen(browser, server, tmp_path):
    session = Session(browser, server, viewport={"width": 360, "height": 740}, has_touch=True)
    try:
        page = session.page
        token = token_for(server.jwt_secret, "phone-limits")
        body = {
            "name": "Big spender",
            "environment": "live",
            "rateLimit": {"limit": 1_000_000, "periodSeconds": 86_399},
            "quota": {"remaining": 10**12, "refillAmount": 10**12, "refillInterval": "monthly"},
        }
        status, created = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
        assert status == 201, created
        sign_in(session, token)
        row(page, "Big spender").wait_for()
        assert limits_text(page, "Big spender").splitlines() == [
            "Rate: 1,000,000 per 86,399 seconds",
            "Credits: 1,000,000,000,000 left, refill to 1,000,000,000,000 monthly",
        ]
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        overflowing = page.evaluate(
            """() => [...document.querySelectorAll('#keys-body td')]
                .filter((cell) => cell.scrollWidth > cell.clientWidth).map((cell) => cell.dataset.label)"""
        )
        assert overflowing == []
        page.screenshot(path=tmp_path / "limits-phone-list.png", full_page=True)

        # Both dialogs: every limit field inside the dialog, nothing sideways.
        for opener, title in (("New key", "New API key"), ("Edit Big spender", "Edit “Big spender”")):
            page.get_by_role("button", name=opener).click()
            dialog = page.get_by_role("dialog", name=title)
            dialog.wait_for()
            box = dialog.bounding_box()
            for label in ("Requests", "Per", "Unit", "Credits left", "Refill", "Refill to"):
                field = dialog.get_by_label(label, exact=True).bounding_box()
                assert box["x"] <= field["x"] and field["x"] + field["width"] <= box["x"] + box["width"], label
            assert page.evaluate("() => document.querySelector('dialog[open]').scrollWidth") <= box["width"]
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
            dialog.get_by_label("Credits left", exact=True).scroll_into_view_if_needed()
            page.screenshot(path=tmp_path / f"limits-phone-{opener.split()[0].lower()}.png")
            dialog.get_by_role("button", name="Cancel").click()
            dialog.wait_for(state="hidden")
        assert session.console_errors == []
    finally:
        session.close()
