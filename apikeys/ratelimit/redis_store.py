"""The Redis counter store: one window counter per key shared by every host, one round trip per verification."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from apikeys.ratelimit.window import StoreError
from apikeys.ratelimit.window import Window

# Redis's own clock decides the window, so every host counts the same window. KEYS[1] is the key's counter name
# without its window; its {hash tag} keeps the window's name in the same cluster slot.
# ARGV: limit, period in seconds, 1 to count this verification (0 only looks).
_TAKE = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local period_us = tonumber(ARGV[2]) * 1000000
local window = math.floor(now_us / period_us)
local name = KEYS[1] .. ':' .. window
local count = tonumber(redis.call('GET', name) or '0')
local reset_us = (window + 1) * period_us - now_us
local allowed = 0
if count < tonumber(ARGV[1]) then
    allowed = 1
    if ARGV[3] == '1' then
        count = redis.call('INCR', name)
        if count == 1 then
            redis.call('PEXPIRE', name, math.ceil(reset_us / 1000) + 1000)
        end
    end
end
return {allowed, count, reset_us, name}
"""
_GIVE_BACK = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
    return redis.call('DECR', KEYS[1])
end
return 0
"""


class RedisStore:
    """Fixed-window counters in Redis (APIKEYS_RATE_LIMIT_URL)."""

    def __init__(self, url: str, timeout: float):
        # No retries: a store that fails answers within ``timeout`` seconds (APIKEYS_RATE_LIMIT_TIMEOUT_MS), and
        # APIKEYS_RATE_LIMIT_ON_ERROR decides what follows.
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._take = self.client.register_script(_TAKE)
        self._give_back = self.client.register_script(_GIVE_BACK)

    def take(self, key_id: str, limit: int, period: int, count: bool = True) -> Window:
        """Count one verification in the key's current window if it has room (``count`` False: only look)."""
        try:
            allowed, used, reset_us, name = self._take(
                keys=[f"apikeys:rl:{{{key_id}}}:{period}"], args=[limit, period, int(count)]
            )
        except redis.RedisError as error:
            raise _failed(error) from None
        counted = bool(allowed) and count
        return Window(bool(allowed), int(used), int(reset_us) / 1_000_000, name if counted else None)

    def give_back(self, mark) -> None:
        """Uncount a verification counted by take (one a later check refused)."""
        try:
            self._give_back(keys=[mark])
        except redis.RedisError as error:
            raise _failed(error) from None


def _failed(error: redis.RedisError) -> StoreError:
    # A refused or dropped connection: not asked again for a second. A timeout fails only its own verification.
    unreachable = isinstance(error, redis.ConnectionError) and not isinstance(error, redis.TimeoutError)
    return StoreError(f"the rate-limit store (Redis) failed: {type(error).__name__}", unreachable=unreachable)
