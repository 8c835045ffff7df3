"""The contract: every documented request of the hosted API, replayed here, answers in the documented shape.

The reference page is read and parsed at test time: each ``curl`` command becomes a
request, each ``Response NNN ...`` block the answer expected of the request before it.
Nothing about the expected fields is written down here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from apikeys import create_app
from apikeys.verification import extension

# A copy of the hosted service's published page, kept with the tests so that a clone
# alone can run them; SHARED is where the team keeps the original, beside the clone.
REFERENCE = Path(__file__).resolve().parent / "reference" / "dashboard-api-keys.txt"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dashboard-api-keys.txt"

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# Generated values, told apart by their shape in the example: "key_abc123", "pk_live_...", "sk_live_...".
GENERATED = re.compile(r"(key|pk|sk)_((live|test)_)?")
JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


@dataclass
class Example:
    """One documented exchange: the curl request and the response shown after it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: object
    status: int
    response: object

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def parse_curl(command: str) -> tuple[str, str, str, dict[str, str], object]:
    """Return method, path, query, headers and JSON body of a curl command line."""
    words = shlex.split(command)
    method, url, headers, body = None, None, {}, None
    words = iter(words[1:])
    for word in words:
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data", "--data-raw"):
            body = json.loads(next(words))
        elif word.startswith("http"):
            url = urlsplit(word)
    method = method or ("POST" if body is not None else "GET")
    return method, url.path, url.query, headers, body


def curl_commands(lines: list[str]) -> list[tuple[int, str]]:
    """Return (line number, command) for each curl command, continuation lines and quoted bodies joined."""
    commands = []
    number = 0
    while number < len(lines):
        if lines[number].startswith("curl "):
            start, command = number, lines[number]
            # A command goes on while a line ends in a backslash or a quote is still open.
            while command.endswith("\\") or command.count("'") % 2:
                number += 1
                command = (command[:-1] if command.endswith("\\") else command + "\n") + lines[number]
            commands.append((start, command))
        number += 1
    return commands


def parse_reference(text: str) -> list[Example]:
    """Pair every ``Response NNN`` block's JSON with the curl command before it."""
    lines = text.splitlines()
    commands = curl_commands(lines)
    decoder = json.JSONDecoder()
    examples = []
    for number, line in enumerate(lines):
        match = re.match(r"Response (\d{3})\b", line)
        if not match:
            continue
        response, _ = decoder.raw_decode("\n".join(lines[number + 1 :]).lstrip())
        _, command = max((c for c in commands if c[0] < number), key=lambda c: c[0])
        method, path, query, headers, body = parse_curl(command)
        examples.append(Example(method, path, query, headers, body, int(match.group(1)), response))
    return examples


def summary_routes(text: str) -> list[tuple[str, str]]:
    """Return (method, path) of every row of the page's endpoint table, ``:id`` kept."""
    return [(method, path) for path, method in re.findall(r"^(/\S*) \| (GET|POST|PUT|PATCH|DELETE) \|", text, re.M)]


def reference_text() -> str:
    """Return the reference page (our copy of it)."""
    return REFERENCE.read_text(encoding="utf-8")


EXAMPLES = parse_reference(reference_text())


# Fields apikeys adds to the reference's answers (key policy); a client of the reference ignores them.
ADDITIVE_FIELDS = {"expiresAt", "scopes", "meta", "rateLimit", "quota"}


def json_type(value) -> str:
    """Return the JSON name of a decoded value's type."""
    return "null" if value is None else JSON_TYPES[type(value)]


def differences(expected, actual, path: str = "$") -> list[str]:
    """Describe how ``actual`` differs from the documented example; never show an actual string."""
    if json_type(expected) != json_type(actual):
        return [f"{path}: {json_type(expected)} documented, {json_type(actual)} answered"]
    if isinstance(expected, dict):
        # Every documented field, and nothing more but the key policy's additive fields.
        if not set(expected) <= set(actual) or set(actual) - set(expected) - ADDITIVE_FIELDS:
            return [f"{path}: fields {sorted(expected)} documented, {sorted(actual)} answered"]
        return [problem for name in expected for problem in differences(expected[name], actual[name], f"{path}.{name}")]
    if isinstance(expected, list):
        if len(actual) != len(expected):
            return [f"{path}: {len(expected)} items documented, {len(actual)} answered"]
        return [
            problem for i, (e, a) in enumerate(zip(expected, actual)) for problem in differences(e, a, f"{path}[{i}]")
        ]
    if isinstance(expected, str):
        if TIMESTAMP.fullmatch(expected):
            return [] if TIMESTAMP.fullmatch(actual) else [f"{path}: not a timestamp like {expected}"]
        generated = GENERATED.match(expected)
        if generated:
            # A made-up id or key: ours must have the same prefix, and be a full key where the example is one.
            same_shape = actual.startswith(generated.group(0)) and ("." in actual) == ("." in expected)
            return [] if same_shape else [f"{path}: not shaped like {generated.group(0)}..."]
    if expected != actual:
        return [f"{path}: {expected!r} documented, another value answered"]
    return []


def replay(client, auth, example: Example, key_id: str | None, example_id: str | None):
    """Send the documented request to the stand-in, with a real token and our key's id for the example's."""
    path = example.path if key_id is None else example.path.replace(example_id, key_id)
    headers = {name: value for name, value in example.headers.items() if name != "Authorization"}
    if "Authorization" in example.headers:
        headers.update(auth())
    url = f"{path}?{example.query}" if example.query else path
    if example.body is None:
        return client.open(url, method=example.method, headers=headers)
    return client.open(url, method=example.method, headers=headers, data=json.dumps(example.body))


def documented_key_id() -> str:
    """Return the id of the key the page creates, which its later examples use."""
    return next(e.response["data"]["id"] for e in EXAMPLES if e.status == 201)


def test_the_reference_has_examples():
    # One exchange per response block, and together they cover the page's endpoint table:
    # if parsing broke, the contract tests below would pass without checking anything.
    assert len(EXAMPLES) == reference_text().count("\nResponse ")
    assert {(e.method, e.path.replace(documented_key_id(), ":id")) for e in EXAMPLES} == {
        *summary_routes(reference_text())
    }


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=[str(example) for example in EXAMPLES])
def test_documented_answer(client, auth, index):
    """Replay the page's requests in order up to this one; this one must answer as documented."""
    key_id = example_id = None
    for number, example in enumerate(EXAMPLES[: index + 1]):
        response = replay(client, auth, example, key_id, example_id)
        if number == index:
            assert response.status_code == example.status
            assert response.is_json
            # Compare first, assert after: pytest would print the arguments, and the answer holds a secret.
            problems = differences(example.response, response.get_json())
            assert problems == []
        if key_id is None and example.status == 201:
            # The key the page goes on to read, rotate, toggle and delete is the one it created.
            key_id, example_id = response.get_json()["data"]["id"], example.response["data"]["id"]
            # Use it once, so its lastUsedAt is a time, as in the examples, not null.
            verified = client.get("/verify", headers={"X-Api-Key": response.get_json()["data"]["fullKey"]})
            assert verified.status_code == 200


@pytest.fixture
def url_map(tmp_path):
    """The stand-in's routes; matching a path needs no database."""
    config = {"TESTING": True, "APIKEYS_DATABASE_URL": "sqlite:///unused.sqlite3", "APIKEYS_JWT_SECRET": "unused" * 8}
    app = create_app(config, instance_path=str(tmp_path))
    yield app.url_map
    extension.get_engine(app).dispose()


DOCUMENTED_ROUTES = list(dict.fromkeys([*summary_routes(reference_text()), *((e.method, e.path) for e in EXAMPLES)]))


@pytest.mark.parametrize(("method", "path"), DOCUMENTED_ROUTES, ids=[f"{m} {p}" for m, p in DOCUMENTED_ROUTES])
def test_documented_paths_are_routes(url_map, method, path):
    endpoint, arguments = url_map.bind("localhost").match(path.replace(":id", "key_0123456789abcdef"), method=method)
    assert endpoint.startswith("api-keys.")
    assert set(arguments) <= {"key_id"}


# The comparison itself: each way an answer can drift from an example is caught, and a secret is never shown.
EXAMPLE = {
    "statusCode": 201,
    "data": {"id": "key_abc", "fullKey": "pk_live_a.sk_live_b", "createdAt": "2025-06-01T12:00:00.000Z"},
}
GOOD = {
    "statusCode": 201,
    "data": {"id": "key_x", "fullKey": "pk_live_x.sk_live_y", "createdAt": "2026-01-02T03:04:05.678Z"},
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"extra": 1}, "fields"),
        ({"scopes": [], "extra": 1}, "fields"),
        ({"createdAt": "drop"}, "fields"),
        ({"createdAt": None}, "null answered"),
        ({"createdAt": 1748779200}, "number answered"),
        ({"createdAt": "2025-06-01T12:00:00Z"}, "not a timestamp"),
        ({"fullKey": "pk_test_x.sk_test_y"}, "not shaped like pk_live_"),
        ({"fullKey": "pk_live_x"}, "not shaped like pk_live_"),
        ({"id": "k_x"}, "not shaped like key_"),
    ],
)
def test_differences_catch_a_changed_answer(change, problem):
    answer = {**GOOD, "data": {**GOOD["data"], **change}}
    answer["data"] = {name: value for name, value in answer["data"].items() if value != "drop"}
    problems = differences(EXAMPLE, answer)
    assert len(problems) == 1
    assert problem in problems[0]
    assert not any(value in problems[0] for value in change.values() if isinstance(value, str) and value != "drop")


def test_differences_accept_generated_values():
    assert differences(EXAMPLE, GOOD) == []
    assert differences(EXAMPLE, {**GOOD, "data": {**GOOD["data"], "scopes": [], "meta": {}, "expiresAt": None}}) == []
    assert differences(EXAMPLE, {**GOOD, "statusCode": 200}) == ["$.statusCode: 201 documented, another value answered"]


def test_our_copy_of_the_reference_is_the_published_one():
    if not SHARED.exists():
        message = f"no published reference at {SHARED} to compare our copy with"
        # A developer's clone may lack shared/; CI must have it, or the check silently never runs.
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message + " (CI is set: check out shared/ beside this clone)")
        pytest.skip(message)
    assert REFERENCE.read_bytes() == SHARED.read_bytes()
