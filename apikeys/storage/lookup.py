"""The verifier's one query: a key's row by public key, compiled once and run on connections kept for it."""

from __future__ import annotations

import json
import threading
from collections import namedtuple
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa

from apikeys import limits
from apikeys.storage.tables import api_keys

# A key's rate limit and quota, read as one value: NULL for a key without them (the usual key pays for one column,
# not six), else one JSON array of the six, decoded into Limits.
LIMIT_COLUMNS = limits.RATE_LIMIT_COLUMNS + limits.QUOTA_COLUMNS
Limits = namedtuple("Limits", LIMIT_COLUMNS)
# Every other column verification reads (not created_at), then the limits.
COLUMNS = [column for column in api_keys.c if column.name != "created_at" and column.name not in LIMIT_COLUMNS]
KeyRow = namedtuple("KeyRow", [*(column.name for column in COLUMNS), "limits"])


def _statement(dialect_name: str) -> sa.Select:
    array = sa.func.json_build_array if dialect_name == "postgresql" else sa.func.json_array
    limited = sa.or_(api_keys.c.rate_limit.is_not(None), api_keys.c.quota_remaining.is_not(None))
    packed = sa.case((limited, array(*(api_keys.c[name] for name in LIMIT_COLUMNS))), else_=sa.null())
    return sa.select(*COLUMNS, packed.label("limits")).where(api_keys.c.public_key == sa.bindparam("public_key"))


def read_limits(value) -> Limits | None:
    """Decode the limits column: None, or the JSON array (text on SQLite, a list from PostgreSQL's driver)."""
    if value is None:
        return None
    values = json.loads(value) if isinstance(value, str) else list(value)
    refilled_at = values[-1]
    if refilled_at is not None:  # "2026-12-06 10:00:00.000000" (SQLite) or "2026-12-06T10:00:00" (PostgreSQL)
        values[-1] = datetime.fromisoformat(refilled_at).replace(tzinfo=UTC)
    return Limits(*values)


MAX_IDLE = 8  # connections kept between lookups; more are opened under load and closed after


class KeyLookup:
    """The verifier's one query, compiled once for an engine and run on DBAPI connections of its own.

    Every verification runs it, so it skips Connection.execute's per-call work, and
    the pool's checkout, reset and (on PostgreSQL) pre-ping round trip: together
    most of a verification's database time. The SQL, the parameter style and each
    column's conversion still come from SQLAlchemy, for any dialect. A connection
    that fails is closed and the lookup tried once more on a new one, which is what
    pre-ping would have done; engine.dispose() closes the idle ones.
    """

    def __init__(self, engine: sa.Engine):
        dialect = engine.dialect
        compiled = _statement(dialect.name).compile(dialect=dialect)
        self.engine = engine
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        # PostgreSQL drivers would wrap the one SELECT in BEGIN ... ROLLBACK: two more
        # round trips than the query itself. (pysqlite begins no transaction for a SELECT.)
        self.autocommit = dialect.name == "postgresql"
        self.errors = (engine.dialect.loaded_dbapi.Error,)
        self.processors = [
            (index, processor)
            for index, column in enumerate(COLUMNS)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]
        self.shared = isinstance(engine.pool, sa.pool.StaticPool)
        self._idle: list = []
        self._lock = threading.Lock()
        sa.event.listen(engine, "engine_disposed", self._close_idle)

    def _connect(self):
        # A connection of the engine's own making (the SQLite pragmas included), then taken out of its pool.
        fairy = self.engine.raw_connection()
        connection = fairy.dbapi_connection
        fairy.detach()
        if self.autocommit:
            connection.autocommit = True
        return connection

    def _release(self, connection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def _close_idle(self, engine=None) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _query(self, connection, parameters):
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, parameters)
            return cursor.fetchone()
        finally:
            cursor.close()

    def __call__(self, public_key: str) -> KeyRow | None:
        """Return the row of a public key, or None."""
        parameters = (public_key,) if self.positional else {"public_key": public_key}
        if self.shared:  # an in-memory SQLite database lives in its one connection: use the pool's
            fairy = self.engine.raw_connection()
            try:
                values = self._query(fairy.dbapi_connection, parameters)
            finally:
                fairy.close()
            return self._row(values)
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            values = self._query(connection, parameters)
        except self.errors:
            connection.close()  # a server restart, a dropped connection: one more try on a new one
            connection = self._connect()
            try:
                values = self._query(connection, parameters)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        self._release(connection)
        return self._row(values)

    def _row(self, values) -> KeyRow | None:
        if values is None:
            return None
        values = list(values)
        for index, processor in self.processors:
            value = values[index]
            if value is not None:  # most timestamps are NULL (no expiry, no grace period): nothing to convert
                values[index] = processor(value)
        values[-1] = read_limits(values[-1])
        return KeyRow(*values)
