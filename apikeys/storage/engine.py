"""The engine the configuration asks for: SQLite files private and in WAL mode, PostgreSQL pooled."""

from __future__ import annotations

import getpass
import os
import re

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


def explain_error(error: sa.exc.DBAPIError, url: str) -> str | None:
    """Return one line saying what a database error at start means and how to fix it; None for a fault of ours."""
    url = sa.make_url(url)
    where = url.render_as_string(hide_password=True)
    text = str(error.orig)
    if getattr(error.orig, "sqlstate", None) == "42501":  # insufficient_privilege
        return _missing_privilege(url, error.orig)
    if not isinstance(error, sa.exc.OperationalError):
        return None
    server = f"{url.host or 'localhost'}:{url.port or 5432}"
    missing = re.search(r'FATAL:\s+(database|role) "(.+?)" does not exist', text)
    if missing and missing.group(1) == "database":
        owner = _identifier(_role(url))
        return (
            f"The database {missing.group(2)} does not exist on {server}: create it with "
            f"`CREATE DATABASE {_identifier(missing.group(2))} OWNER {owner};` as a superuser (docs/scaling.md)."
        )
    if missing:
        return (
            f"The role {missing.group(2)} does not exist on {server}: create it with "
            f"`CREATE ROLE {_identifier(missing.group(2))} LOGIN PASSWORD '...';` as a superuser (docs/scaling.md)."
        )
    return f"The database at {where} does not answer ({type(error.orig).__name__})."


def _missing_privilege(url: sa.URL, orig) -> str:
    role, database = _role(url), url.database
    refusal = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig).splitlines()[0]
    schema = re.fullmatch(r"permission denied for schema (.+)", refusal)
    if schema:  # PostgreSQL 15+ no longer lets every role create tables in public
        return (
            f"The role {role} may not create tables in schema {schema.group(1)} of database {database}: run "
            f"`ALTER DATABASE {_identifier(database)} OWNER TO {_identifier(role)};` (or, in that database, "
            f"`GRANT CREATE ON SCHEMA {_identifier(schema.group(1))} TO {_identifier(role)};`) as a superuser "
            "(docs/scaling.md)."
        )
    return (
        f"The role {role} was refused in database {database} ({refusal}): run apikeys as the role that owns the "
        "database and its tables (docs/scaling.md)."
    )


def _role(url: sa.URL) -> str:
    # The role libpq connects as when the URL names none.
    return url.username or os.environ.get("PGUSER") or getpass.getuser()


def _identifier(name: str) -> str:
    """Return a PostgreSQL identifier as it is typed in a statement: quoted unless it is a plain lower-case name."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
