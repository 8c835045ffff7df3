"""Per-key quotas through real gunicorn (issue 19): credits taken atomically across workers and hosts, and the cost.

On PostgreSQL two servers (two "hosts" of 2 workers, each with its own instance
folder) share one database; on SQLite one server runs 4 workers. Either way the
credits live in the main database and every accepted request takes its cost from
them in one statement, so exactly as many requests are accepted as there are credits.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pytest

from tests.limits_support import TENANT
from tests.limits_support import Answer
from tests.limits_support import create_key
from tests.limits_support import get_key
from tests.limits_support import start_server
from tests.limits_support import verify
from tests.servers import Gunicorn
from tests.servers import postgres_database
from tests.servers import token_for

pytestmark = pytest.mark.slow

CREDITS = 1000
REQUESTS = 1500
CLIENTS = 64


class Hosts(NamedTuple):
    backend: str
    servers: list[Gunicorn]
    token: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hosts(request, tmp_path_factory):
    """SQLite: one gunicorn -w 4. PostgreSQL: two gunicorns -w 2 on one database. Shared by this module's tests."""
    from tests import logscan  # a plugin: imported late so that pytest can rewrite it first

    jwt_secret = secrets.token_urlsafe(64)
    logscan.signing_secrets.add(jwt_secret)
    folder = tmp_path_factory.mktemp(f"quota-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database, shape = f"sqlite:///{folder / 'apikeys.sqlite3'}", [("host", 4)]
        else:
            database = stack.enter_context(postgres_database("apikeys_quota"))
            shape = [("host-a", 2), ("host-b", 2)]
        servers = []
        for name, workers in shape:  # one after the other: the first creates the schema
            server = start_server(folder, name, database, jwt_secret, workers)
            stack.callback(server.stop)
            servers.append(server)
        yield Hosts(request.param, servers, token_for(jwt_secret, TENANT))
        logs = "".join(server.logs() for server in servers)
    assert "Traceback" not in logs
    # Without APIKEYS_RATE_LIMIT_URL every host says at start that its rate limits are its own (several hosts on
    # one PostgreSQL database: the operator learns the limits are not shared).
    assert logs.count("Rate limits are counted per host, in ") == len(servers)


def quota_left(answer: Answer) -> int | None:
    return answer.header_int("X-Api-Key-Quota-Remaining")


def assert_usage_exceeded(answer: Answer, left: int) -> None:
    """A 429 USAGE_EXCEEDED in the envelope and headers, with the credits left; no refill set, so no Retry-After."""
    assert answer.status == 429, answer.status
    assert (answer.body["statusCode"], answer.body["code"]) == (429, "USAGE_EXCEEDED")
    assert answer.headers["X-Api-Key-Error"] == "USAGE_EXCEEDED"
    assert quota_left(answer) == left
    assert answer.headers["Retry-After"] is None
    assert answer.headers["RateLimit-Limit"] is None  # no rate limit on the key: no RateLimit headers


def assert_accepted(answer: Answer, left: int) -> None:
    assert answer.status == 200, answer.status
    assert quota_left(answer) == left
    assert answer.body["data"]["quota"] == {"remaining": left}


def test_concurrent_requests_take_exactly_the_credits(hosts):
    """64 clients send 1,500 requests of cost 1 for a key with 1,000 credits: 1,000 accepted, 500 refused, 0 left."""
    key = create_key(
        hosts.servers[0], hosts.token, quota={"remaining": CREDITS, "refillAmount": None, "refillInterval": None}
    )
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = list(pool.map(lambda n: verify(hosts.servers[n % len(hosts.servers)], key), range(REQUESTS)))
    statuses = Counter(answer.status for answer in answers)
    where = f"{hosts.backend}, {len(hosts.servers)} host(s)"
    print(f"\nFIGURES quota [{where}]: {REQUESTS} requests, answers={dict(statuses)}")
    assert statuses == {200: CREDITS, 429: REQUESTS - CREDITS}
    accepted = [answer for answer in answers if answer.status == 200]
    for answer in accepted:
        assert answer.body["data"]["quota"] == {"remaining": quota_left(answer)}
    # Each accepted request took its credit in one statement and saw what it left: every count from 999 down to 0 once.
    assert sorted(quota_left(answer) for answer in accepted) == list(range(CREDITS))
    for answer in answers:
        if answer.status == 429:
            assert_usage_exceeded(answer, 0)
    for server in hosts.servers:  # every host reads the same count: nothing left, never below zero
        assert get_key(server, hosts.token, key)["quota"]["remaining"] == 0
    assert_usage_exceeded(verify(hosts.servers[-1], key), 0)


def test_cost_zero_consumes_nothing_and_a_cost_above_the_credits_left_is_refused(hosts):
    """With 3 credits: cost 0 is accepted and takes nothing, cost 5 (header or ?cost=) is refused and takes nothing."""
    first, last = hosts.servers[0], hosts.servers[-1]
    key = create_key(first, hosts.token, quota={"remaining": 3, "refillAmount": None, "refillInterval": None})

    assert_accepted(verify(first, key, cost=0), 3)
    assert_accepted(verify(last, key, cost=0), 3)
    assert get_key(last, hosts.token, key)["quota"]["remaining"] == 3

    assert_usage_exceeded(verify(last, key, cost=5), 3)
    assert_usage_exceeded(verify(first, key, query="?cost=5"), 3)
    assert get_key(first, hosts.token, key)["quota"]["remaining"] == 3

    assert_accepted(verify(last, key, cost=3), 0)  # exactly the credits left is enough
    assert_usage_exceeded(verify(first, key), 0)
    assert_accepted(verify(first, key, cost=0), 0)  # not fewer credits than its cost: checked, nothing taken
    assert get_key(last, hosts.token, key)["quota"]["remaining"] == 0
