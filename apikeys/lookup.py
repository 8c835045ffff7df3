"""The verifier's one query: a key's whole row by public key, compiled once and run on a pooled DBAPI connection."""

from __future__ import annotations

from collections import namedtuple

import sqlalchemy as sa

from apikeys.db import api_keys

_BY_PUBLIC_KEY = sa.select(api_keys).where(api_keys.c.public_key == sa.bindparam("public_key"))

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
