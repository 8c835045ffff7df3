"""Query functions on api_keys. Each takes a Connection; the caller owns the transaction."""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from datetime import timedelta

import sqlalchemy as sa

from apikeys.db import api_keys

# The columns a dashboard response shows: never the hash.
PUBLIC_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.environment,
    api_keys.c.public_key,
    api_keys.c.active,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
)


def _owned(tenant_id: str, key_id: str):
    return sa.and_(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)


def insert_key(conn: sa.Connection, **values) -> None:
    """Insert one key row."""
    conn.execute(sa.insert(api_keys).values(active=True, failed_attempts=0, **values))


def count_keys(conn: sa.Connection, tenant_id: str) -> int:
    """Return how many keys a tenant has."""
    query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.tenant_id == tenant_id)
    return conn.execute(query).scalar_one()


def list_keys(conn: sa.Connection, tenant_id: str, limit: int, offset: int) -> list[sa.Row]:
    """Return one page of a tenant's keys, newest first, ties broken by id."""
    query = (
        sa.select(*PUBLIC_COLUMNS)
        .where(api_keys.c.tenant_id == tenant_id)
        .order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(conn.execute(query))


def get_key(conn: sa.Connection, tenant_id: str, key_id: str) -> sa.Row | None:
    """Return a tenant's key, or None when the tenant has no key of that id."""
    return conn.execute(sa.select(*PUBLIC_COLUMNS).where(_owned(tenant_id, key_id))).one_or_none()


# The verifier's statement is built once: SQLAlchemy then finds it in its compiled
# cache without rebuilding its cache key on every verification.
_BY_PUBLIC_KEY = sa.select(api_keys).where(api_keys.c.public_key == sa.bindparam("public_key"))


def find_by_public_key(conn: sa.Connection, public_key: str) -> sa.Row | None:
    """Return the whole row of a public key, or None."""
    return conn.execute(_BY_PUBLIC_KEY, {"public_key": public_key}).one_or_none()


KeyRow = namedtuple("KeyRow", [column.name for column in api_keys.c])


class KeyLookup:
    """The verifier's one query, compiled once for an engine and run on a pooled DBAPI connection.

    Every verification runs it, so it skips Connection.execute's per-call work
    (about half of a cached verification); the SQL, the bound parameter style and
    the conversion of each column still come from SQLAlchemy, for any dialect.
    """

    def __init__(self, engine: sa.Engine):
        dialect = engine.dialect
        compiled = _BY_PUBLIC_KEY.compile(dialect=dialect)
        self.engine = engine
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        # PostgreSQL drivers would wrap the one SELECT in BEGIN ... ROLLBACK: two more
        # round trips than the query itself. (pysqlite begins no transaction for a SELECT.)
        self.autocommit = dialect.name == "postgresql"
        self.processors = [
            (index, processor)
            for index, column in enumerate(api_keys.c)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]

    def __call__(self, public_key: str) -> KeyRow | None:
        """Return the whole row of a public key, or None."""
        parameters = (public_key,) if self.positional else {"public_key": public_key}
        connection = self.engine.raw_connection()  # back to the pool, rolled back, on close
        try:
            if self.autocommit:
                connection.driver_connection.autocommit = True
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, parameters)
                values = cursor.fetchone()
            finally:
                cursor.close()
                if self.autocommit:
                    connection.driver_connection.autocommit = False
        finally:
            connection.close()
        if values is None:
            return None
        values = list(values)
        for index, processor in self.processors:
            values[index] = processor(values[index])
        return KeyRow(*values)


def get_secret_hash(conn: sa.Connection, tenant_id: str, key_id: str) -> sa.Row | None:
    """Return a tenant's key's public key, environment and secret hash, or None."""
    columns = (api_keys.c.public_key, api_keys.c.environment, api_keys.c.secret_hash)
    return conn.execute(sa.select(*columns).where(_owned(tenant_id, key_id))).one_or_none()


def set_secret_hash(conn: sa.Connection, tenant_id: str, key_id: str, secret_hash: str, expected_hash: str) -> bool:
    """Replace a key's secret hash if it is still ``expected_hash``, and clear its failures; tell whether it did."""
    statement = (
        sa.update(api_keys)
        .where(_owned(tenant_id, key_id), api_keys.c.secret_hash == expected_hash)
        .values(secret_hash=secret_hash, failed_attempts=0, failed_window_start=None)
    )
    return conn.execute(statement).rowcount == 1


def toggle_key(conn: sa.Connection, tenant_id: str, key_id: str) -> bool | None:
    """Flip a key's active flag in one statement; return the new flag, or None if there is no such key."""
    statement = (
        sa.update(api_keys)
        .where(_owned(tenant_id, key_id))
        .values(active=sa.not_(api_keys.c.active))
        .returning(api_keys.c.active)
    )
    return conn.execute(statement).scalar_one_or_none()


def delete_key(conn: sa.Connection, tenant_id: str, key_id: str) -> bool:
    """Delete a key; tell whether there was one."""
    return conn.execute(sa.delete(api_keys).where(_owned(tenant_id, key_id))).rowcount == 1


def record_use(conn: sa.Connection, key_id: str, now: datetime, interval: timedelta) -> None:
    """Set last_used_at to ``now`` unless it was set less than ``interval`` ago."""
    statement = (
        sa.update(api_keys)
        .where(api_keys.c.id == key_id)
        .where(sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - interval))
        .values(last_used_at=now)
    )
    conn.execute(statement)


def record_failure(conn: sa.Connection, key_id: str, now: datetime, window: timedelta) -> None:
    """Count one failed secret check, starting a new window when the last one has ended."""
    expired = sa.or_(api_keys.c.failed_window_start.is_(None), api_keys.c.failed_window_start <= now - window)
    # Typed as the column, so it is stored as naive UTC like every timestamp (a bare
    # aware datetime would be sent as timestamptz and shifted to the session's zone).
    window_start = sa.bindparam("window_start", now, type_=api_keys.c.failed_window_start.type)
    statement = (
        sa.update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(
            # Both right-hand sides read the old row, so one statement is race-free.
            failed_attempts=sa.case((expired, 1), else_=api_keys.c.failed_attempts + 1),
            failed_window_start=sa.case((expired, window_start), else_=api_keys.c.failed_window_start),
        )
    )
    conn.execute(statement)
