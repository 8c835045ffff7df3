"""The last check of a verification: the key's rate limit, then its quota; only a request both admit consumes.

A key with neither costs nothing here: both are read (as one column) from the row already
fetched, and no store or statement is touched. Counting happens only after every
other check has passed, so that a refused request (a wrong secret, a missing
scope) never uses up the holder's limit or credits.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from apikeys import errors
from apikeys import limits
from apikeys.ratelimit.window import Window
from apikeys.storage import quotas
from apikeys.verification import headers


class Usage(NamedTuple):
    """What a verification left of its key's limits: its rate-limit window, its credits (None: not limited)."""

    limit: int | None = None
    window: Window | None = None
    credits: int | None = None

    def rate_limit(self) -> dict | None:
        """The 200 body's ``rateLimit``: limit, remaining and reset (whole seconds), or None."""
        if self.window is None:
            return None
        return {"limit": self.limit, "remaining": max(0, self.limit - self.window.count), "reset": _reset(self.window)}

    def headers(self) -> dict[str, str]:
        """RateLimit-Limit, -Remaining, -Reset and X-Api-Key-Quota-Remaining, where the key has them."""
        found = {}
        rate_limit = self.rate_limit()
        if rate_limit is not None:
            found[headers.RATE_LIMIT_LIMIT] = str(rate_limit["limit"])
            found[headers.RATE_LIMIT_REMAINING] = str(rate_limit["remaining"])
            found[headers.RATE_LIMIT_RESET] = str(rate_limit["reset"])
        if self.credits is not None:
            found[headers.QUOTA_REMAINING] = str(self.credits)
        return found


def _reset(window: Window) -> int:
    return max(1, math.ceil(window.reset))


def check_limits(attempt) -> None:
    """Admit the request under the key's rate limit and quota, and consume its cost; raise RateLimited/UsageExceeded."""
    policy = attempt.row.limits
    if policy is None:  # a key without either: nothing to count, read or write
        return
    key_id = attempt.row.id
    limiter, cost = attempt.state.rate_limiter, attempt.cost
    window = None
    if policy.rate_limit is not None:
        # Cost 0 only looks: it is admitted while the window has room, and counts nothing.
        window = limiter.take(key_id, policy.rate_limit, policy.rate_limit_period, count=cost > 0)
        if window is not None and not window.allowed:
            usage = Usage(policy.rate_limit, window, limits.credits_left(policy, attempt.now))
            raise errors.RateLimited(retry_after=_reset(window), limits=usage.headers())
    try:
        left = _take_credits(attempt, cost)
    except errors.UsageExceeded as refusal:
        limiter.give_back(window)
        if window is not None:
            window = window._replace(count=window.count - (window.mark is not None))
            refusal.limits = Usage(policy.rate_limit, window).headers() | refusal.limits
        raise
    except BaseException:
        limiter.give_back(window)
        raise
    attempt.usage = Usage(policy.rate_limit, window, left)


def _take_credits(attempt, cost: int) -> int | None:
    """Take the cost from the key's quota; return the credits left (None: no quota); raise UsageExceeded."""
    policy, now = attempt.row.limits, attempt.now
    if policy.quota_remaining is None:
        return None
    available = limits.credits_left(policy, now)
    if available >= cost and cost > 0:
        with attempt.state.engine.begin() as conn:
            taken, left = quotas.take_credits(conn, attempt.row.id, cost, now)
        if taken:
            return left
        available = left or 0  # another verification took them meanwhile
    elif available >= cost:
        return available  # cost 0: a look, no write
    retry_after = None  # only if the next refill will let this request through
    if policy.quota_refill_interval is not None and (policy.quota_refill_amount or 0) >= cost:
        retry_after = limits.seconds_until(limits.next_refill(policy.quota_refill_interval, now), now)
    raise errors.UsageExceeded(retry_after=retry_after, limits={headers.QUOTA_REMAINING: str(available)})
