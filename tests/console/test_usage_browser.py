"""Usage in the console, in Chromium: each key's chart and table, the list's 24 h column and the tenant's
overview equal the API's numbers for keys with a known history."""

from __future__ import annotations

import os
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys.keys import new_secret
from apikeys.storage.tables import USAGE_RESULTS
from apikeys.storage.tables import usage_buckets
from tests.console.browser import Session
from tests.console.browser import row
from tests.console.browser import sign_in
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import service_env
from tests.servers import token_for

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
RESULTS = ["valid", "invalidSecret", "disabled", "expired", "wrongEnvironment", "insufficientScope"]
RESULTS += ["rateLimited", "usageExceeded"]
REASONS = {
    "invalidSecret": "wrong secret",
    "insufficientScope": "missing scope",
    "disabled": "disabled",
    "wrongEnvironment": "wrong environment",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The service under gunicorn on a SQLite file, writing its usage counts every second."""
    directory = tmp_path_factory.mktemp("console-usage")
    jwt_secret = secrets.token_urlsafe(64)
    database_url = f"sqlite:///{directory / 'apikeys.sqlite3'}"
    env = service_env(
        database_url,
        jwt_secret,
        directory / "instance",
        HOME=str(directory),
        APIKEYS_USAGE_FLUSH_SECONDS="1",
    )
    with Gunicorn(directory, env, workers=1) as running:
        running.jwt_secret = jwt_secret
        running.database_url = database_url
        yield running


# ---------- a known history ----------


def create(server, token: str, name: str, scopes=()) -> dict:
    """Create a test key through the API; return its create answer (full key included)."""
    status, answer = call(
        server.url,
        "POST",
        "/dashboard/api-keys",
        token=token,
        body={"name": name, "environment": "test", "scopes": list(scopes)},
    )
    assert status == 201, answer
    return answer["data"]


def verify(server, full_key: str, query: str = "") -> int:
    """Present a key to /verify as an application would; return the status."""
    request = urllib.request.Request(server.url + "/verify" + query, headers={"X-Api-Key": full_key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def wrong_secret(full_key: str) -> str:
    """The key's public part with another well-formed secret: a real key presented with the wrong secret."""
    return full_key.split(".")[0] + "." + new_secret("test")


def present(server, key: dict, valid=0, invalid_secret=0, insufficient_scope=0, wrong_environment=0) -> None:
    """Make verifications of a (test) key with the given results, each checked as /verify answers it."""
    for _ in range(valid):
        assert verify(server, key["fullKey"]) == 200
    for _ in range(invalid_secret):
        assert verify(server, wrong_secret(key["fullKey"])) == 401
    for _ in range(insufficient_scope):
        assert verify(server, key["fullKey"], "?scope=admin:write") == 403
    for _ in range(wrong_environment):
        assert verify(server, key["fullKey"], "?environment=live") == 403


def seed_history(server, tenant: str, key_id: str, counts: dict[datetime, dict[str, int]]) -> None:
    """Write earlier hours' buckets into the server's database, as its workers' flushes write them."""
    engine = sa.create_engine(server.database_url)
    try:
        with engine.begin() as conn:
            rows = [
                {
                    "key_id": key_id,
                    "tenant_id": tenant,
                    "bucket_start": start,
                    **dict.fromkeys(USAGE_RESULTS, 0),
                    **numbers,
                }
                for start, numbers in counts.items()
            ]
            conn.execute(sa.insert(usage_buckets), rows)
    finally:
        engine.dispose()


def usage(server, token: str, path: str, **parameters) -> dict:
    """GET a usage endpoint with these query parameters; return the envelope's data."""
    status, answer = call(server.url, "GET", path + "?" + urllib.parse.urlencode(parameters), token=token)
    assert status == 200, answer
    return answer["data"]


def wait_for_totals(server, token: str, key_id: str, expected: dict[str, int]) -> None:
    """Wait until the worker has written the verifications (every second here) and the API shows them."""
    deadline = time.monotonic() + 15
    while True:
        totals = usage(server, token, f"/dashboard/api-keys/{key_id}/usage")["totals"]
        if {name: totals[name] for name in expected} == expected:
            return
        assert time.monotonic() < deadline, f"the API still shows {totals}, not {expected}"
        time.sleep(0.2)


def refused(counts: dict) -> int:
    """Every result but valid, added up: what the chart stacks as refused."""
    return sum(counts[name] for name in RESULTS[1:])


def reasons_text(counts: dict) -> str:
    """The refusals by result as the page words them: "3 wrong secret, 1 missing scope"."""
    return ", ".join(f"{counts[name]:,} {REASONS[name]}" for name in RESULTS[1:] if counts[name])


def iso(moment: datetime) -> str:
    """A UTC time as the API and the page write it."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def earlier_history(hour: datetime) -> dict[datetime, dict[str, int]]:
    """Counts for a key's earlier hours (by column name): steady use, and wrong secrets for the last three hours."""
    history: dict[datetime, dict[str, int]] = {}
    for back in range(1, 24):
        counts = {"valid": 5 + back * 37 % 23}
        if back <= 3:
            counts["invalid_secret"] = 4 * (4 - back)
        if back == 9:
            counts["disabled"] = 6
        history[hour - timedelta(hours=back)] = counts
    for back in range(1, 30):  # noon of each earlier UTC day, added to an hour above if it is one of them
        start = hour.replace(hour=12) - timedelta(days=back)
        counts = history.setdefault(start, {})
        counts["valid"] = counts.get("valid", 0) + 300 + back * 53 % 200
        counts["insufficient_scope"] = counts.get("insufficient_scope", 0) + back % 5
    return history


def expected_totals(history: dict, since: datetime, this_hours: dict[str, int]) -> dict[str, int]:
    """The API's totals from ``since`` on: the history's buckets in the range and this hour's verifications."""
    totals = {name: this_hours.get(name, 0) for name in RESULTS}
    for start, counts in history.items():
        if start >= since:
            for name, column in zip(RESULTS, USAGE_RESULTS, strict=False):
                totals[name] += counts.get(column, 0)
    return totals


def this_hour() -> datetime:
    """The start of the current UTC hour."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def clear_of_the_hours_end(seconds: int = 120) -> None:
    """Wait for the next hour if this one ends within ``seconds``: the test's verifications stay in one bucket."""
    left = (this_hour() + timedelta(hours=1) - datetime.now(UTC)).total_seconds()
    if left < seconds:
        time.sleep(left + 0.5)


# ---------- what the page shows ----------


def chart_of(panel) -> dict:
    """The chart in ``panel`` as drawn: its range, scale, and each bar's numbers and heights."""
    chart = panel.locator("svg.chart")
    chart.wait_for()
    return chart.evaluate(
        """(svg) => ({
            since: svg.dataset.since, until: svg.dataset.until, granularity: svg.dataset.granularity,
            top: Number(svg.dataset.top), plotHeight: Number(svg.dataset.plotHeight),
            width: svg.getBoundingClientRect().width,
            bars: [...svg.querySelectorAll('g.bar')].map((bar) => ({
                start: bar.dataset.start, valid: Number(bar.dataset.valid), refused: Number(bar.dataset.refused),
                validHeight: Number(bar.querySelector('rect.valid').getAttribute('height')),
                refusedHeight: Number(bar.querySelector('rect.refused').getAttribute('height')),
            })),
        })"""
    )


def table_of(panel) -> list[dict]:
    """The rows of the panel's table of numbers, opened as a reader would, and its total row."""
    details = panel.locator("details.usage-numbers")
    if not details.evaluate("(node) => node.open"):
        details.locator("summary").click()
    return panel.locator("table.usage-table tr:has(td)").evaluate_all(
        """(rows) => rows.map((tr) => ({
            start: tr.dataset.start || null,
            when: tr.querySelector('th').innerText,
            valid: tr.querySelector('td[data-result=valid]').innerText,
            refused: tr.querySelector('td[data-result=refused]').innerText,
            reasons: tr.querySelector('td[data-result=reasons]').innerText,
        }))"""
    )


def assert_panel_equals_api(panel, answer: dict, granularity: str) -> None:
    """The panel's bars and table hold exactly the API's buckets and totals, in order."""
    drawn = chart_of(panel)
    assert drawn["granularity"] == granularity
    assert [bar["start"] for bar in drawn["bars"]] == [bucket["start"] for bucket in answer["buckets"]]
    for bar, bucket in zip(drawn["bars"], answer["buckets"], strict=True):
        assert (bar["valid"], bar["refused"]) == (bucket["valid"], refused(bucket)), bucket["start"]
        # Heights in proportion: each count at the axis' scale (rounded to 0.01 px as drawn).
        scale = drawn["plotHeight"] / drawn["top"]
        assert bar["validHeight"] == pytest.approx(bucket["valid"] * scale, abs=0.006)
        assert bar["refusedHeight"] == pytest.approx(refused(bucket) * scale, abs=0.006)
    tallest = max(bucket["valid"] + refused(bucket) for bucket in answer["buckets"])
    assert tallest <= drawn["top"] < 2.5 * max(tallest, 2)

    rows = table_of(panel)
    *buckets, total = rows
    assert [row["start"] for row in buckets] == [bucket["start"] for bucket in answer["buckets"]]
    for shown, bucket in zip(buckets, answer["buckets"], strict=True):
        expected = {"valid": f"{bucket['valid']:,}", "refused": f"{refused(bucket):,}", "reasons": reasons_text(bucket)}
        assert {name: shown[name] for name in expected} == expected, bucket["start"]
    totals = answer["totals"]
    assert total == {
        "start": None,
        "when": "Total",
        "valid": f"{totals['valid']:,}",
        "refused": f"{refused(totals):,}",
        "reasons": reasons_text(totals),
    }
    legend = [" ".join(item.split()) for item in panel.locator(".legend li").all_inner_texts()]
    assert legend == [f"Valid {totals['valid']:,}", f"Refused {refused(totals):,}"]


def assert_labels_fit(panel, box: dict) -> None:
    """The chart is drawn at the screen's size, not scaled down: 12 px labels, inside the box, none overlapping."""
    labels = panel.locator("svg.chart text").evaluate_all(
        """(texts) => texts.map((text) => {
            const r = text.getBoundingClientRect();
            return {text: text.textContent, x: r.x, right: r.right, y: r.y, size: getComputedStyle(text).fontSize};
        })"""
    )
    assert {label["size"] for label in labels} == {"12px"}
    assert all(box["x"] <= label["x"] and label["right"] <= box["x"] + box["width"] for label in labels)
    bottom = max(label["y"] for label in labels)
    axis = sorted((label for label in labels if label["y"] == bottom), key=lambda label: label["x"])
    assert len(axis) >= 4, axis
    assert all(a["right"] + 4 <= b["x"] for a, b in zip(axis, axis[1:], strict=False)), axis


def api_for_chart(server, token: str, path: str, panel) -> dict:
    """The API's answer for the range the chart shows (its since, its until, its granularity)."""
    drawn = chart_of(panel)
    return usage(server, token, path, since=drawn["since"], until=drawn["until"], granularity=drawn["granularity"])


# ---------- the tests ----------


def test_a_keys_chart_table_and_list_count_equal_the_api(session, server, tmp_path):
    page = session.page
    tenant = "usage"
    token = token_for(server.jwt_secret, tenant)
    clear_of_the_hours_end()
    busy = create(server, token, "Busy key", scopes=["orders:read"])
    second = create(server, token, "Second key")
    create(server, token, "Quiet key")

    # This hour through /verify: 3 valid, 2 with a wrong secret, 1 asking for a scope the key lacks.
    present(server, busy, valid=3, invalid_secret=2, insufficient_scope=1)
    present(server, second, valid=2)
    this_hours = {"valid": 3, "invalidSecret": 2, "insufficientScope": 1}
    wait_for_totals(server, token, busy["id"], this_hours)
    wait_for_totals(server, token, second["id"], {"valid": 2})
    # The earlier hours and days, written into the database as the workers' flushes write them.
    hour = this_hour()
    history = earlier_history(hour)
    seed_history(server, tenant, busy["id"], history)

    # The list: each key's verifications in the last 24 hours, from one call for the whole list.
    sign_in(session, token)
    counts = page.locator("#keys-body td[data-label='Last 24 h'] .usage-count[data-count]")
    counts.nth(2).wait_for()
    shown = {
        name: int(row(page, name).locator(".usage-count").get_attribute("data-count"))
        for name in ("Busy key", "Second key", "Quiet key")
    }
    since = iso(hour - timedelta(hours=23))
    listed = usage(server, token, "/dashboard/usage", since=since, granularity="hour", top=1000)["topKeys"]
    from_api = {item["name"]: sum(item["totals"][name] for name in RESULTS) for item in listed}
    assert shown == {"Busy key": from_api["Busy key"], "Second key": from_api["Second key"], "Quiet key": 0}
    busy_day = sum(expected_totals(history, hour - timedelta(hours=23), this_hours).values())
    assert shown == {"Busy key": busy_day, "Second key": 2, "Quiet key": 0}
    assert "Quiet key" not in from_api
    busy_cell = row(page, "Busy key").locator("td[data-label='Last 24 h']").inner_text()
    assert busy_cell.split() == [f"{busy_day:,}", "Usage"]
    usage_calls = [line for line in session.requests if "/dashboard/usage" in line.split(" ")[1]]
    assert len(usage_calls) == 1 and "top=1000" in usage_calls[0]

    # The key's chart of the last 24 hours: 24 hourly bars, valid and refused, equal to the API's buckets.
    row(page, "Busy key").get_by_role("button", name="Usage Busy key").click()
    dialog = page.get_by_role("dialog", name="Usage of “Busy key”")
    dialog.wait_for()
    panel = dialog.locator("#key-usage")
    drawn = chart_of(panel)
    assert drawn["since"] == since and len(drawn["bars"]) == 24
    answer = api_for_chart(server, token, f"/dashboard/api-keys/{busy['id']}/usage", panel)
    assert_panel_equals_api(panel, answer, "hour")
    day_totals = expected_totals(history, hour - timedelta(hours=23), this_hours)
    assert answer["totals"] == day_totals  # the API has exactly the history and this hour's verifications
    newest = chart_of(panel)["bars"][-1]
    assert (newest["start"], newest["valid"], newest["refused"]) == (iso(hour), 3, 3)
    assert dialog.locator(".reasons").inner_text() == f"Refused: {reasons_text(day_totals)}."
    assert dialog.get_by_role("button", name="24 hours").get_attribute("aria-pressed") == "true"
    dialog.locator("summary").click()  # closed again for the picture, the pointer off the bars
    page.mouse.move(0, 0)
    dialog.screenshot(path=tmp_path / "console-usage.png")

    # The last 30 days: 30 daily bars, the seeded days among them, equal to the API's.
    dialog.get_by_role("button", name="30 days").click()
    panel.locator("svg.chart[data-granularity=day]").wait_for()
    answer = api_for_chart(server, token, f"/dashboard/api-keys/{busy['id']}/usage", panel)
    assert len(answer["buckets"]) == 30
    assert_panel_equals_api(panel, answer, "day")
    assert answer["totals"] == expected_totals(history, hour.replace(hour=0) - timedelta(days=29), this_hours)
    assert dialog.get_by_role("button", name="30 days").get_attribute("aria-pressed") == "true"
    dialog.screenshot(path=tmp_path / "console-usage-days.png")
    dialog.get_by_role("button", name="Close").click()
    dialog.wait_for(state="hidden")

    # The tenant's overview: its chart, and its top keys most first with their totals.
    page.get_by_role("link", name="Usage").click()
    page.get_by_role("heading", name="Usage", exact=True).wait_for()
    overview = page.locator("#tenant-usage")
    answer = api_for_chart(server, token, "/dashboard/usage", overview)
    assert_panel_equals_api(overview, answer, "hour")
    assert answer["totals"] == day_totals | {"valid": day_totals["valid"] + 2}
    page.locator("#top-body tr").first.wait_for()
    top = page.locator("#top-body tr").evaluate_all(
        "(rows) => rows.map((tr) => [...tr.querySelectorAll('td[data-label]')].map((td) => td.innerText))"
    )
    assert top == [
        [f"{item['name']}\n{item['id']}", *(f"{n:,}" for n in (item["totals"]["valid"], refused(item["totals"])))]
        + [f"{sum(item['totals'][name] for name in RESULTS):,}"]
        for item in answer["topKeys"]
    ]
    assert [item["name"] for item in answer["topKeys"]] == ["Busy key", "Second key"]
    overview_png = tmp_path / "console-usage-overview.png"
    page.screenshot(path=overview_png, full_page=True)

    # A top key's button opens that key's chart.
    page.locator("#top-body").get_by_role("button", name="Usage Second key").click()
    dialog = page.get_by_role("dialog", name="Usage of “Second key”")
    dialog.locator("svg.chart").wait_for()
    answer = api_for_chart(server, token, f"/dashboard/api-keys/{second['id']}/usage", dialog.locator("#key-usage"))
    assert_panel_equals_api(dialog.locator("#key-usage"), answer, "hour")
    assert answer["totals"]["valid"] == 2
    assert session.console_errors == []  # the policy refused nothing (no inline style, no other origin)

    assert (tmp_path / "console-usage.png").stat().st_size > 10_000
    if os.environ.get("APIKEYS_CONSOLE_SCREENSHOTS") == "1":
        shutil.copyfile(tmp_path / "console-usage.png", DOCS / "console-usage.png")


def test_a_deleted_keys_history_stays_in_the_overview(session, server):
    page = session.page
    token = token_for(server.jwt_secret, "deleted")
    gone = create(server, token, "Leaked key")
    present(server, gone, valid=1, invalid_secret=1)
    wait_for_totals(server, token, gone["id"], {"valid": 1, "invalidSecret": 1})
    assert call(server.url, "DELETE", f"/dashboard/api-keys/{gone['id']}", token=token)[0] in (200, 204)

    sign_in(session, token)
    page.goto("/console#usage")
    top = page.locator("#top-body tr")
    top.first.wait_for()
    assert top.locator("td[data-label=Key]").inner_text() == f"deleted key\n{gone['id']}"
    top.get_by_role("button", name=f"Usage deleted key {gone['id']}").click()
    dialog = page.get_by_role("dialog", name="Usage of a deleted key")
    panel = dialog.locator("#key-usage")
    answer = api_for_chart(server, token, f"/dashboard/api-keys/{gone['id']}/usage", panel)
    assert_panel_equals_api(panel, answer, "hour")
    assert answer["totals"]["valid"] == 1 and answer["totals"]["invalidSecret"] == 1
    assert session.console_errors == []


def test_the_chart_is_readable_at_360_px(browser, server, tmp_path):
    session = Session(browser, server, viewport={"width": 360, "height": 740}, has_touch=True)
    try:
        page = session.page
        token = token_for(server.jwt_secret, "usage-phone")
        key = create(server, token, "Phone key with a rather long name to wrap", scopes=["a:b"])
        present(server, key, valid=2, invalid_secret=1, wrong_environment=1)
        wait_for_totals(server, token, key["id"], {"valid": 2, "invalidSecret": 1, "wrongEnvironment": 1})
        sign_in(session, token)
        name = "Phone key with a rather long name to wrap"
        row(page, name).locator(".usage-count[data-count='4']").wait_for()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        row(page, name).get_by_role("button", name=f"Usage {name}").click()
        dialog = page.get_by_role("dialog", name=f"Usage of “{name}”")
        panel = dialog.locator("#key-usage")
        drawn = chart_of(panel)
        box = dialog.bounding_box()
        assert drawn["width"] <= box["width"] and len(drawn["bars"]) in (24, 25)  # 25 if the hour turned meanwhile
        assert_labels_fit(panel, box)
        dialog.get_by_role("button", name="30 days").click()
        panel.locator("svg.chart[data-granularity=day]").wait_for()
        assert_labels_fit(panel, box)
        dialog.get_by_role("button", name="24 hours").click()
        panel.locator("svg.chart[data-granularity=hour]").wait_for()
        assert page.evaluate("() => document.querySelector('dialog[open]').scrollWidth") <= box["width"]
        table_of(panel)
        assert page.evaluate("() => document.querySelector('dialog[open]').scrollWidth") <= box["width"]
        wrap = panel.locator("details .table-wrap")
        assert wrap.evaluate("(node) => node.scrollWidth <= node.clientWidth")  # the table fits, no sideways scroll
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        page.screenshot(path=tmp_path / "usage-phone-dialog.png")
        dialog.get_by_role("button", name="Close").click()

        page.get_by_role("link", name="Usage").click()
        page.locator("#top-body tr").first.wait_for()
        assert chart_of(page.locator("#tenant-usage"))["width"] <= 360
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
        page.screenshot(path=tmp_path / "usage-phone-overview.png", full_page=True)
        assert session.console_errors == []
    finally:
        session.close()


def test_answers_the_page_cannot_read_are_shown_not_thrown(session, server):
    # Another tenant's key id: the dialog says what the API said, and the page goes on working.
    page = session.page
    other = create(server, token_for(server.jwt_secret, "someone-else"), "Theirs")
    token = token_for(server.jwt_secret, "nosy")
    create(server, token, "Mine")
    sign_in(session, token)
    row(page, "Mine").locator(".usage-count[data-count='0']").wait_for()
    status, refusal = call(server.url, "GET", f"/dashboard/api-keys/{other['id']}/usage", token=token)
    assert status == 404
    page.evaluate(
        "([id]) => import('/console/static/usage.js').then((usage) => usage.openKeyUsage(id, 'Theirs'))", [other["id"]]
    )
    alert = page.get_by_role("dialog", name="Usage of “Theirs”").get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == refusal["message"]
    assert page.locator("#key-usage svg.chart").count() == 0
