"""``apikeys usage``: the same numbers as the usage API in every format, its errors in one line, the unknown keys."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from apikeys import keys
from apikeys.cli.main import main
from apikeys.usage.reading import RESULT_NAMES
from apikeys.verification import extension
from tests.conftest import VERIFIER_KEY
from tests.servers import inherited_env

APIKEYS = os.path.join(os.path.dirname(sys.executable), "apikeys")
MISSING = "key_aaaaaaaaaaaaaaaa"


@pytest.fixture
def create(client, auth):
    def make(tenant: str = "acme", name: str = "counted") -> dict:
        response = client.post("/dashboard/api-keys", json={"name": name, "environment": "live"}, headers=auth(tenant))
        assert response.status_code == 201, response.json
        return response.json["data"]

    return make


@pytest.fixture
def counted(app, client, create):
    """Two keys of acme verified (busy 3 valid + 2 wrong secrets, quiet 1 valid), one of globex; all written."""
    busy, quiet, other = create(name="busy"), create(name="quiet"), create(tenant="globex")
    for full_key, times in ((busy["fullKey"], 3), (wrong_secret(busy), 2), (quiet["fullKey"], 1)):
        for _ in range(times):
            client.get("/verify", headers={"X-Api-Key": full_key})
    client.get("/verify", headers={"X-Api-Key": other["fullKey"]})
    extension.get_state(app).usage.flush()
    return {"busy": busy["id"], "quiet": quiet["id"], "other": other["id"]}


def wrong_secret(key: dict) -> str:
    return f"{key['publicKey']}.{keys.new_secret(key['environment'])}"


def unknown_key() -> str:
    return f"{keys.new_public_key('live')}.{keys.new_secret('live')}"


def span() -> list[str]:
    """--since and --until around this hour: explicit, so that the command and the API read the same range."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    since, until = hour - timedelta(hours=2), hour + timedelta(hours=1)
    return ["--since", since.strftime("%Y-%m-%dT%H:%M:%SZ"), "--until", until.strftime("%Y-%m-%dT%H:%M:%SZ")]


def query(args: list[str]) -> str:
    """The API's query string for the command's --option value pairs."""
    return "?" + urlencode({args[index][2:]: args[index + 1] for index in range(0, len(args), 2)})


def api(client, auth, path: str, args: list[str], tenant: str = "acme") -> dict:
    response = client.get(path + query(args), headers=auth(tenant))
    assert response.status_code == 200, response.json
    return response.json["data"]


def usage(runner, *args: str):
    return runner.invoke(main, ["usage", *args])


def ok(runner, *args: str) -> str:
    result = usage(runner, *args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_a_keys_json_is_the_apis_data(runner, client, auth, counted, granularity):
    args = [*span(), "--granularity", granularity]
    expected = api(client, auth, f"/dashboard/api-keys/{counted['busy']}/usage", args)
    assert expected["totals"] == {**dict.fromkeys(RESULT_NAMES, 0), "valid": 3, "invalidSecret": 2}
    shown = json.loads(ok(runner, "--tenant", "acme", "--key", counted["busy"], *args, "--format", "json"))
    assert shown == expected


def test_a_tenants_json_is_the_apis_data_with_its_top_keys(runner, client, auth, counted):
    args = [*span(), "--top", "1"]
    expected = api(client, auth, "/dashboard/usage", args)
    assert expected["totals"]["valid"] == 4 and expected["totals"]["invalidSecret"] == 2
    assert [key["id"] for key in expected["topKeys"]] == [counted["busy"]]
    assert json.loads(ok(runner, "--tenant", "acme", *args, "--format", "json")) == expected


@pytest.mark.parametrize("whose", ["key", "tenant"])
def test_csv_is_a_header_then_a_row_a_bucket_with_the_apis_numbers(runner, client, auth, counted, whose):
    args = span()
    path = f"/dashboard/api-keys/{counted['busy']}/usage" if whose == "key" else "/dashboard/usage"
    expected = api(client, auth, path, args)
    which = ["--key", counted["busy"]] if whose == "key" else []
    rows = list(csv.reader(io.StringIO(ok(runner, "--tenant", "acme", *which, *args, "--format", "csv"))))
    assert rows[0] == ["start", *RESULT_NAMES]
    assert rows[1:] == [
        [bucket["start"], *(str(bucket[name]) for name in RESULT_NAMES)] for bucket in expected["buckets"]
    ]
    assert len(rows) == 1 + 3  # three hours, no totals row
    assert sum(int(row[1]) for row in rows[1:]) == (3 if whose == "key" else 4)


@pytest.mark.parametrize("whose", ["key", "tenant"])
def test_the_table_has_a_row_a_bucket_then_the_apis_totals(runner, client, auth, counted, whose):
    args = span()
    path = f"/dashboard/api-keys/{counted['busy']}/usage" if whose == "key" else "/dashboard/usage"
    expected = api(client, auth, path, args)
    which = ["--key", counted["busy"]] if whose == "key" else []
    lines = ok(runner, "--tenant", "acme", *which, *args).splitlines()
    assert lines[0].endswith(f"per hour, from {expected['since']} to {expected['until']}:")
    assert lines[1].split() == ["start", *RESULT_NAMES]
    buckets = [[bucket["start"], *(str(bucket[name]) for name in RESULT_NAMES)] for bucket in expected["buckets"]]
    assert [line.split() for line in lines[2:5]] == buckets
    assert lines[5].split() == ["total", *(str(expected["totals"][name]) for name in RESULT_NAMES)]
    if whose == "key":
        assert len(lines) == 6
        return
    assert lines[6:8] == ["", "Top keys:"]
    assert lines[8].split() == ["id", "name", "total", *RESULT_NAMES]
    top = [line.split() for line in lines[9:]]
    assert top == [
        [key["id"], key["name"], str(sum(key["totals"].values())), *(str(key["totals"][n]) for n in RESULT_NAMES)]
        for key in expected["topKeys"]
    ]
    assert [row[:3] for row in top] == [[counted["busy"], "busy", "5"], [counted["quiet"], "quiet", "1"]]


BAD = [
    (["--since", "yesterday"], "since"),
    (["--since", "2026-12-06T00:00:00"], "since"),
    (["--until", "2026-13-01T00:00:00Z"], "until"),
    (["--since", "2026-12-06T00:00:00Z", "--until", "2026-12-05T00:00:00Z"], "since"),
    (["--since", "2000-01-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"], "since"),
    (["--granularity", "week"], "granularity"),
    (["--top", "0"], "top"),
    (["--top", "1001"], "top"),
    (["--top", "ten"], "top"),
]


@pytest.mark.parametrize(("args", "name"), BAD, ids=[" ".join(args) for args, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_option_with_the_apis_message(runner, client, auth, args, name):
    response = client.get("/dashboard/usage" + query(args), headers=auth("acme"))
    assert response.status_code == 400
    said = " ".join(response.json["errors"][name])
    result = usage(runner, "--tenant", "acme", *args)
    assert result.exit_code == 2
    assert result.output == f"Error: --{name}: {said}\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "Error: Give --tenant (with --key for one key), or --unknown.\n"),
        (["--key", MISSING], "Error: Give --tenant (with --key for one key), or --unknown.\n"),
        (["--unknown", "--tenant", "acme"], "Error: --unknown and --tenant cannot go together.\n"),
        (["--unknown", "--top", "3"], "Error: --unknown and --top cannot go together.\n"),
        (["--tenant", "acme", "--key", MISSING, "--top", "3"], "Error: --key and --top cannot go together: "),
        (["--tenant", "acme", "--format", "xml"], "Error: Invalid value for '--format': "),
        (["--tenant", " acme"], "Error: Invalid value for '--tenant': must be 1 to 255 printable"),
    ],
)
def test_options_that_do_not_go_together_are_one_line(runner, args, said):
    result = usage(runner, *args)
    assert result.exit_code == 2
    assert result.output.startswith(said) and result.output.count("\n") == 1, result.output


@pytest.mark.parametrize("whose", ["another tenant's", "unknown"])
def test_a_key_the_tenant_does_not_have_is_not_found_as_keys_get_says(runner, counted, whose):
    key_id = counted["other"] if whose == "another tenant's" else MISSING
    result = usage(runner, "--tenant", "acme", "--key", key_id, *span())
    assert result.exit_code == 1
    assert result.output == f"Error: No API key {key_id} for tenant acme.\n"
    assert result.output == runner.invoke(main, ["keys", "get", "--tenant", "acme", key_id]).output


def test_unknown_counts_the_keys_no_tenant_has_and_no_tenant_sees_them(app, runner, client, auth, create):
    known = create()
    for full_key in (unknown_key(), unknown_key(), known["fullKey"], "not-a-key"):
        client.get("/verify", headers={"X-Api-Key": full_key})
    extension.get_state(app).usage.flush()
    args = span()
    tenant = api(client, auth, "/dashboard/usage", args)
    assert tenant["totals"]["valid"] == 1 and tenant["totals"]["invalidSecret"] == 0

    shown = json.loads(ok(runner, "--unknown", *args, "--format", "json"))
    assert shown["totals"] == {"unknownKey": 2}
    assert sum(bucket["unknownKey"] for bucket in shown["buckets"]) == 2
    assert [bucket["start"] for bucket in shown["buckets"]] == [bucket["start"] for bucket in tenant["buckets"]]
    assert (shown["granularity"], shown["since"], shown["until"]) == ("hour", tenant["since"], tenant["until"])
    rows = list(csv.reader(io.StringIO(ok(runner, "--unknown", *args, "--format", "csv"))))
    assert rows == [
        ["start", "unknownKey"],
        *([bucket["start"], str(bucket["unknownKey"])] for bucket in shown["buckets"]),
    ]
    lines = ok(runner, "--unknown", *args).splitlines()
    assert lines[0].startswith("Unknown keys, per hour") and lines[-1].split() == ["total", "2"]


def test_the_installed_script_reads_another_database_with_database_url(tmp_path, client, auth, counted, database_url):
    args = [*span(), "--granularity", "day"]
    expected = api(client, auth, f"/dashboard/api-keys/{counted['busy']}/usage", args)
    environment = {
        **inherited_env(),
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "elsewhere"),
        "APIKEYS_VERIFIER_KEY": VERIFIER_KEY,
        "APIKEYS_DATABASE_URL": f"sqlite:///{tmp_path / 'not-this-one.sqlite3'}",
    }
    command = [APIKEYS, "--database-url", database_url, "usage", "--tenant", "acme", "--key", counted["busy"], *args]
    result = subprocess.run([*command, "--format", "json"], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
