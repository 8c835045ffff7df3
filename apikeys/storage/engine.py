"""The engine the configuration asks for: SQLite files private and in WAL mode, PostgreSQL pooled."""

from __future__ import annotations

import os

import sqlalchemy as sa

from apikeys import instance


def _set_sqlite_pragmas(busy_timeout_ms: int):
    def on_connect(dbapi_connection, connection_record):
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the one writer; busy_timeout makes writers
        # wait for each other instead of failing with "database is locked".
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def database_url(config, instance_path: str) -> str:
    """Return the configured database URL, or the default SQLite file in the instance folder."""
    return config["APIKEYS_DATABASE_URL"] or "sqlite:///" + os.path.join(instance_path, "apikeys.sqlite3")


def create_engine(config, instance_path: str) -> sa.Engine:
    """Create the engine the configuration asks for; a relative SQLite path lives in ``instance_path``."""
    url = sa.make_url(database_url(config, instance_path))
    # A logged database error must not carry a secret hash or a tenant's data.
    options = {"hide_parameters": True, "pool_size": config["APIKEYS_DB_POOL_SIZE"]}
    options["max_overflow"] = config["APIKEYS_DB_MAX_OVERFLOW"]
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite and url.database in (None, "", ":memory:"):
        # One in-memory database lives as long as its one connection: share it (one thread at a time).
        return sa.create_engine(
            url, poolclass=sa.StaticPool, connect_args={"check_same_thread": False}, hide_parameters=True
        )
    if sqlite:
        if not os.path.isabs(url.database):
            # A relative SQLite path lives in the instance folder, as in flask-sqlalchemy-lite.
            url = url.set(database=os.path.join(instance_path, url.database))
        folder = os.path.dirname(url.database)
        if not os.path.isdir(folder):
            instance.make_private_folder(folder)
        instance.create_private_file(url.database)  # 0600, before SQLite creates it 0644
    else:
        options["pool_timeout"] = config["APIKEYS_DB_POOL_TIMEOUT"]
        options["pool_recycle"] = config["APIKEYS_DB_POOL_RECYCLE"]
        options["pool_pre_ping"] = config["APIKEYS_DB_POOL_PRE_PING"]
    engine = sa.create_engine(url, **options)
    if sqlite:
        sa.event.listen(engine, "connect", _set_sqlite_pragmas(config["APIKEYS_SQLITE_BUSY_TIMEOUT"]))
    return engine
