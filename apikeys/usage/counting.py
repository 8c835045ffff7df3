"""Counting verifications per key, hour and result: in memory per worker, written in one transaction every few seconds.

A verification only adds one to a number in a dict: no I/O on the hot path.
A thread of the worker writes what was counted every APIKEYS_USAGE_FLUSH_SECONDS
as additions to the buckets (an upsert, so workers and hosts add up exactly),
and once more when the worker stops gracefully (gunicorn's worker_exit hook, or
atexit). A worker killed with SIGKILL loses at most one interval's counts. If a
write fails (the database away), the counts are kept for the next one.
The same thread removes buckets older than APIKEYS_USAGE_RETENTION_DAYS, a
small batch per transaction, hourly; verification never reads this table.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from apikeys.storage import usage as queries
from apikeys.storage.tables import USAGE_RESULTS

log = logging.getLogger("apikeys.usage")

HOUR = 3600
RETENTION_EVERY = HOUR  # seconds between two retention passes of a worker
RETENTION_BATCH = 1000  # buckets deleted per transaction
# The result a refusal counts under, by its metrics label; refusals that are not about the key (busy, the
# rate-limit store down) are not counted.
RESULT_OF_LABEL = {
    "invalid": "invalid_secret",
    "disabled": "disabled",
    "expired": "expired",
    "wrong_environment": "wrong_environment",
    "insufficient_scope": "insufficient_scope",
    "rate_limited": "rate_limited",
    "usage_exceeded": "usage_exceeded",
}
UNKNOWN = ("", "")  # the tenant-less row of presented keys whose public key is unknown


_COUNTERS: weakref.WeakSet = weakref.WeakSet()


def _after_fork() -> None:
    # A forked worker starts with nothing counted and no thread: the parent's are not its own.
    for counter in list(_COUNTERS):
        counter._reset()


os.register_at_fork(after_in_child=_after_fork)


class UsageCounter:
    """One worker's counts since its last write, and the thread that writes them."""

    def __init__(self, engine, flush_seconds: int, retention_days: int):
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.retention = timedelta(days=retention_days)
        self._reset()
        _COUNTERS.add(self)

    def _reset(self) -> None:
        # (key_id, tenant_id, hour, result) -> verifications since the last write
        self.counts: dict[tuple[str, str, int, str], int] = {}
        self._hour = (datetime.min.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC), 0)
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self._warned_at = float("-inf")

    def count(self, key_id: str, tenant_id: str, result: str, now: datetime) -> None:
        """Count one verification of a key (result: one of USAGE_RESULTS) in the hour of ``now``."""
        # The hour's bounds are kept: two comparisons instead of a conversion on every verification.
        start, end, hour = self._hour
        if not start <= now < end:
            hour = int(now.timestamp()) // HOUR
            start = datetime.fromtimestamp(hour * HOUR, UTC)
            self._hour = (start, start + timedelta(hours=1), hour)
        bucket = (key_id, tenant_id, hour, result)
        with self._lock:
            self.counts[bucket] = self.counts.get(bucket, 0) + 1
        if self._thread is None:
            self._start()

    def count_refusal(self, row, label: str, now: datetime) -> None:
        """Count a refusal: under its key if the row was found, in the tenant-less total if the key is unknown."""
        if row is None:
            if label == "invalid":
                self.count(*UNKNOWN, "unknown_key", now)
            return
        result = RESULT_OF_LABEL.get(label)
        if result is not None:
            self.count(row.id, row.tenant_id, result, now)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="apikeys-usage", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        next_retention = time.monotonic() + self.flush_seconds
        while not self._stop.wait(self.flush_seconds):
            self.flush()
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_EVERY
                self.remove_old()

    def flush(self) -> int:
        """Write the counts made so far, in one transaction; return how many buckets were written."""
        with self._flushing:
            with self._lock:
                pending, self.counts = self.counts, {}
            if not pending:
                return 0
            buckets: dict[tuple[str, str, int], dict] = {}
            for (key_id, tenant_id, hour, result), number in pending.items():
                row = buckets.get((key_id, tenant_id, hour))
                if row is None:
                    start = datetime.fromtimestamp(hour * HOUR, UTC)
                    row = buckets[(key_id, tenant_id, hour)] = {"key_id": key_id, "tenant_id": tenant_id}
                    row |= {"bucket_start": start} | dict.fromkeys(USAGE_RESULTS, 0)
                row[result] += number
            # In one order on every worker and host: two transactions adding to the same buckets in opposite orders
            # would deadlock on PostgreSQL (and one of them lose its counts at a stop, when every worker writes).
            rows = [buckets[bucket] for bucket in sorted(buckets)]
            try:
                with self.engine.begin() as conn:
                    queries.add_counts(conn, rows)
            except Exception as error:  # kept for the next write: counts are lost only with the process
                self._keep(pending)
                self._warn(f"Usage counts could not be written ({type(error).__name__}); kept for the next try.")
                return 0
            return len(rows)

    def _keep(self, pending: dict) -> None:
        with self._lock:
            for bucket, number in pending.items():
                self.counts[bucket] = self.counts.get(bucket, 0) + number

    def remove_old(self) -> int:
        """Delete buckets older than the retention, a batch per transaction; return how many went."""
        cutoff = datetime.now(UTC) - self.retention
        removed = 0
        try:
            while True:
                with self.engine.begin() as conn:
                    deleted = queries.delete_before(conn, cutoff, RETENTION_BATCH)
                removed += deleted
                if deleted < RETENTION_BATCH:
                    return removed
        except Exception as error:
            self._warn(f"Old usage buckets could not be removed ({type(error).__name__}); tried again in an hour.")
            return removed

    def stop(self) -> None:
        """Stop the thread and write what is left (a worker that stops, a test's app); one retry: there is no next."""
        self._stop.set()
        atexit.unregister(self.flush)
        self.flush()
        if self.counts:
            time.sleep(0.1)
            self.flush()

    def discard(self) -> None:
        """Stop the thread and drop what is not written yet (an app whose database is gone, such as a test's)."""
        self._stop.set()
        atexit.unregister(self.flush)
        with self._lock:
            self.counts = {}
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)  # gone when this returns (unless a write of it hangs on the database)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning(message)
