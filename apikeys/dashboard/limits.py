"""What keeps one tenant from taking what others need: host-wide turns at bcrypt, and a key count per tenant.

bcrypt for key changes (create, regenerate, import) takes turns host-wide:
APIKEYS_HASHING_CONCURRENCY at once, shared by every worker through lock files
in the instance folder, so that a flood of creates leaves the other cores to
verification. A tenant holds at most APIKEYS_MAX_KEYS_PER_TENANT keys.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from flask import has_request_context

from apikeys import errors
from apikeys import instance
from apikeys import turns
from apikeys.storage import queries

# A request that finds every hashing slot taken waits this long for one, so that a change that meets another
# never sees a 503. A worker that waits serves nobody else meanwhile (gunicorn's workers are sync), so with
# slow hashes only one request may wait; beyond, a 503 at once.
HASHING_WAIT_SECONDS = 2.0
# Below these rounds a hash takes a few milliseconds (tests and development): whoever waits is served within
# milliseconds, so every request may wait.
LINE_LIMIT_ROUNDS = 10
# The first half of PostgreSQL's two-part advisory lock keys: ours, the tenant's hash is the second half.
TENANT_LOCK_CLASS = 0x61706B73  # "apks"


class HashingTurns:
    """This host's turns at bcrypt for key changes: a place in line, then a slot (lock files every worker shares)."""

    def __init__(self, folder: str, concurrency: int, line_limited: bool):
        self.slots = [os.path.join(folder, f"hashing-slot-{number}.lock") for number in range(concurrency)]
        # A place in line for each slot and one more: those hashing hold one, and so does the one waiting.
        self.places = [os.path.join(folder, f"hashing-place-{number}.lock") for number in range(concurrency + 1)]
        self.line_limited = line_limited
        self._held = threading.local()  # a thread hashes one secret at a time: a turn it holds, it may use again

    def place(self):
        """Hold a place in line: a request gets one at once (a limited line) or within its wait; a command waits."""
        deadline = _deadline()
        if deadline is not None and self.line_limited:
            deadline = time.monotonic()
        return self._hold("place", self.places, deadline)

    def slot(self):
        """Hold a hashing slot: a request waits up to HASHING_WAIT_SECONDS, a command as long as it takes."""
        return self._hold("slot", self.slots, _deadline())

    @contextlib.contextmanager
    def _hold(self, kind: str, paths: list[str], deadline: float | None):
        if getattr(self._held, kind, False):
            yield
            return
        with turns.hold_one(paths, deadline, errors.HashingBusy):
            setattr(self._held, kind, True)
            try:
                yield
            finally:
                setattr(self._held, kind, False)


def _deadline() -> float | None:
    # Waiting ties up a server worker only in a request; a command's operator would rather wait than retry.
    return time.monotonic() + HASHING_WAIT_SECONDS if has_request_context() else None


@dataclass(frozen=True)
class Limits:
    """The dashboard's limits: the host's hashing turns (None: unbounded) and keys per tenant (0: unlimited)."""

    turns: HashingTurns | None = None
    max_keys: int = 0


def of(state) -> Limits:
    """Return an app's limits; an app that only verifies (ApiKeys(app) alone) has none: it changes no keys."""
    return state.limits or Limits()


def place_in_line(state):
    """Hold a place in the host's line for bcrypt (nothing to wait for where the app sets no limits)."""
    hashing = of(state).turns
    return contextlib.nullcontext() if hashing is None else hashing.place()


def hashing_slot(state):
    """Hold one of the host's bcrypt slots (nothing to wait for where the app sets no limits)."""
    hashing = of(state).turns
    return contextlib.nullcontext() if hashing is None else hashing.slot()


@contextlib.contextmanager
def hashing_turn(state):
    """Hold a turn at bcrypt for a key change: a place in line, then a slot."""
    with place_in_line(state), hashing_slot(state):
        yield


def check_room(state, added: Counter, *, named: bool) -> None:
    """Refuse, before any bcrypt, keys that would take a tenant over its limit (the insert checks again)."""
    if of(state).max_keys:
        with state.engine.connect() as conn:
            check_counts(state, conn, added, named=named, inserted=False)


def lock_tenants(conn: sa.Connection, tenant_ids) -> None:
    """On PostgreSQL, take each tenant's transaction lock, in one order, so that counts and inserts take turns.

    SQLite needs none: the insert, which comes before the count, holds the
    database's one write lock until the transaction ends.
    """
    if conn.dialect.name == "postgresql":
        for tenant in sorted(tenant_ids):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(TENANT_LOCK_CLASS, sa.func.hashtext(tenant))))


def check_counts(state, conn: sa.Connection, added: Counter, *, named: bool, inserted: bool) -> None:
    """Raise KeyLimitReached if ``added`` keys (``inserted`` already, or still to come) take a tenant over its limit."""
    limit = of(state).max_keys
    for tenant, count in added.items():
        if limit and queries.count_keys(conn, tenant) + (0 if inserted else count) > limit:
            raise errors.KeyLimitReached(limit, tenant if named else None)


def init_app(app) -> None:
    """Set up the dashboard's limits: the host's hashing turns in the instance folder, and keys per tenant."""
    config = app.config
    # In the private instance folder, named after nothing secret: never in /tmp, where any local user
    # could list them, or make them first.
    instance.make_private_folder(app.instance_path)
    # 0: half the cores, so that key changes leave the other half to verification.
    concurrency = config["APIKEYS_HASHING_CONCURRENCY"] or max(1, (os.cpu_count() or 1) // 2)
    hashing = HashingTurns(app.instance_path, concurrency, config["APIKEYS_BCRYPT_ROUNDS"] >= LINE_LIMIT_ROUNDS)
    app.extensions["apikeys"].limits = Limits(hashing, config["APIKEYS_MAX_KEYS_PER_TENANT"])
