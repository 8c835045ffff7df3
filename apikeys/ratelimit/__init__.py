"""Rate-limit counters: fixed windows aligned to the Unix epoch, in a store every worker (or every host) shares.

The algorithm, and the bound it guarantees: time is cut into windows of the
key's period, starting at multiples of the period since 1970-01-01T00:00:00Z
(a 60 s limit counts from each whole minute, a daily one from midnight UTC).
Each window admits at most ``limit`` verifications of the key, exactly, across
every worker sharing the store; the count starts again at the next window. So
any span of one period admits at most 2 x ``limit`` (the end of one window and
the start of the next), and any span of n whole windows at most n x ``limit``.
One counter per key, one atomic step per verification (a SQL upsert, or one
Lua script in Redis), no scheduler.
"""
