"""The counter store as verification uses it: made on first use, and what a failure of it means.

A failing store (Redis down, a timeout, a broken file) never fails a
verification by surprise: APIKEYS_RATE_LIMIT_ON_ERROR says whether the key is
served without its limit (``open``) or refused with a 503 (``closed``). Either
way the failure is counted in /metrics and logged at most once a minute. A
store that cannot be reached at all (connection refused, a file that cannot be
opened, three slow answers in a row) is left alone for a second, so an outage
costs a connection attempt or a timeout once a second per worker, not on every
verification; one slow answer on a busy machine fails only its own verification.
"""

from __future__ import annotations

import logging
import threading
import time

from apikeys import errors
from apikeys.ratelimit.stores import make_store
from apikeys.ratelimit.window import StoreError
from apikeys.ratelimit.window import Window

log = logging.getLogger("apikeys.ratelimit")

RETRY_AFTER_FAILURE = 1.0  # seconds the store is not asked again once it is down
SLOW_IN_A_ROW = 3  # this many slow answers in a row (timeouts, a busy file) and the store counts as down
WARN_EVERY = 60.0  # seconds between two warnings about the store


class RateLimiter:
    """Counts verifications of limited keys in the app's store, under the app's failure setting."""

    def __init__(self, state, config, instance_path: str):
        self.state = state
        self.config = config
        self.instance_path = instance_path
        self.closed = config["APIKEYS_RATE_LIMIT_ON_ERROR"] == "closed"
        self._store = None
        self._lock = threading.Lock()
        self._skip_until = float("-inf")
        self._slow_in_a_row = 0
        self._warned_at = float("-inf")

    @property
    def store(self):
        """The store, made on first use: an app whose keys have no limits never opens one."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = make_store(self.config, self.instance_path)
        return self._store

    def take(self, key_id: str, limit: int, period: int, count: bool = True) -> Window | None:
        """Count a verification in its key's window; None when the store failed and the setting is ``open``."""
        now = time.monotonic()
        try:
            if now < self._skip_until:
                raise StoreError("the rate-limit store failed less than a second ago")
            window = self.store.take(key_id, limit, period, count)
        except Exception as error:  # whatever the store raises, the setting decides: never a 500
            self._failed(_as_store_error(error), now)
            if self.closed:
                raise errors.RateLimitUnavailable() from None
            return None
        self._slow_in_a_row = 0
        return window

    def give_back(self, window: Window | None) -> None:
        """Uncount a verification a later check refused; a store failure here only loses that one count."""
        if window is None or window.mark is None:
            return
        try:
            self.store.give_back(window.mark)
        except Exception as error:
            self._failed(_as_store_error(error), time.monotonic())

    def _failed(self, error: StoreError, now: float) -> None:
        if self._skip_until <= now:  # a real try that failed, not a skipped one
            # One slow answer on a busy machine fails only itself; a store that is down (or slow every time, as
            # a hung Redis is) is left alone for a second, so it costs its timeout once a second per worker.
            self._slow_in_a_row = 0 if error.unreachable else self._slow_in_a_row + 1
            if error.unreachable or self._slow_in_a_row >= SLOW_IN_A_ROW:
                self._slow_in_a_row = 0
                self._skip_until = now + RETRY_AFTER_FAILURE
        metrics = self.state.metrics
        if metrics is not None:
            metrics.rate_limit_errors.inc()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            served = "refused with 503 (closed)" if self.closed else "served without their limit (open)"
            log.warning("%s; rate-limited keys are %s until it answers again.", error, served)


def _as_store_error(error: Exception) -> StoreError:
    if isinstance(error, StoreError):
        return error
    return StoreError(f"the rate-limit store failed: {type(error).__name__}: {error}", unreachable=True)
