"""Which counter store an app uses, and how the start log names it."""

from __future__ import annotations

import os


def describe(config, instance_path: str) -> str:
    """Say where rate limits are counted, for the start log (a Redis URL without its password)."""
    url = config["APIKEYS_RATE_LIMIT_URL"]
    if url:
        from redis.connection import parse_url

        parts = parse_url(url)  # never the password
        where = parts.get("path") or f"{parts.get('host')}:{parts.get('port', 6379)}/{parts.get('db', 0)}"
        return f"Rate limits are counted in Redis at {where}, shared by every host."
    from apikeys.ratelimit.embedded import FILE

    return (
        f"Rate limits are counted per host, in {os.path.join(instance_path, FILE)}: with several hosts on one "
        "database, set APIKEYS_RATE_LIMIT_URL=redis://... to share them."
    )


def make_store(config, instance_path: str):
    """Return the app's counter store: Redis with APIKEYS_RATE_LIMIT_URL, else a SQLite file in the instance folder."""
    url = config["APIKEYS_RATE_LIMIT_URL"]
    if url:
        from apikeys.ratelimit.redis_store import RedisStore

        return RedisStore(url, config["APIKEYS_RATE_LIMIT_TIMEOUT_MS"] / 1000)
    from apikeys.ratelimit.embedded import EmbeddedStore

    return EmbeddedStore(instance_path)
