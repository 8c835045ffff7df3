"""The schema, the engine on the app, and the ``init-db`` command."""

from __future__ import annotations

import os
from datetime import UTC
from datetime import datetime

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored as naive UTC on every database, read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("environment", sa.String(8), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    # Failed secret checks in the current window: shared by every worker and host.
    sa.Column("failed_attempts", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("failed_window_start", UTCDateTime, nullable=True),
    sa.CheckConstraint("environment IN ('live', 'test')", name="ck_api_keys_environment"),
    sa.UniqueConstraint("public_key", name="uq_api_keys_public_key"),
    sa.Index("ix_api_keys_tenant_created", "tenant_id", "created_at", "id"),
)


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


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


def database_url(app) -> str:
    """Return the configured database URL, or the default SQLite file in the instance folder."""
    url = app.config["APIKEYS_DATABASE_URL"]
    if url:
        return url
    return "sqlite:///" + os.path.join(app.instance_path, "apikeys.sqlite3")


def create_engine(app) -> sa.Engine:
    """Create the engine the configuration asks for."""
    url = sa.make_url(database_url(app))
    config = app.config
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:":
            # One in-memory database lives as long as its one connection: share it.
            # For tests and experiments: the one connection is shared, so keep to one thread at a time.
            return sa.create_engine(
                url, poolclass=sa.StaticPool, connect_args={"check_same_thread": False}, hide_parameters=True
            )
        if not os.path.isabs(database):
            # A relative SQLite path lives in the instance folder, as in flask-sqlalchemy-lite.
            url = url.set(database=os.path.join(app.instance_path, database))
        os.makedirs(os.path.dirname(url.database), exist_ok=True)
        engine = sa.create_engine(
            url,
            pool_size=config["APIKEYS_DB_POOL_SIZE"],
            max_overflow=config["APIKEYS_DB_MAX_OVERFLOW"],
            hide_parameters=True,  # a logged database error must not carry a secret hash or a tenant's data
        )
        sa.event.listen(engine, "connect", _set_sqlite_pragmas(config["APIKEYS_SQLITE_BUSY_TIMEOUT"]))
        return engine
    return sa.create_engine(
        url,
        pool_size=config["APIKEYS_DB_POOL_SIZE"],
        max_overflow=config["APIKEYS_DB_MAX_OVERFLOW"],
        pool_timeout=config["APIKEYS_DB_POOL_TIMEOUT"],
        pool_recycle=config["APIKEYS_DB_POOL_RECYCLE"],
        pool_pre_ping=bool(config["APIKEYS_DB_POOL_PRE_PING"]),
        hide_parameters=True,
    )


def get_engine(app=None) -> sa.Engine:
    """Return the app's engine."""
    app = app or current_app
    try:
        return app.extensions["apikeys.db"]
    except KeyError:
        raise RuntimeError(
            "The database is not set up on this app: call apikeys.db.init_app(app) or ApiKeys(app)."
        ) from None


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision``, the newest migration by default."""
    from apikeys import migrate  # Alembic loads only for this

    migrate.upgrade(engine, revision)


@click.command("init-db")
@with_appcontext
def init_db_command():
    """Create the database schema, or upgrade it to the newest migration."""
    upgrade(get_engine())
    click.echo("Database is up to date.")


@click.group("db")
def db_group():
    """Database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade_command(revision):
    """Upgrade the schema to REVISION (default: the newest)."""
    upgrade(get_engine(), revision)
    click.echo(f"Database is at {revision}.")


def init_app(app) -> None:
    """Put an engine on the app and register the init-db command."""
    if "apikeys.db" in app.extensions:
        raise RuntimeError("The apikeys database is already set up on this app; call init_app once.")
    engine = create_engine(app)
    app.extensions["apikeys.db"] = engine
    app.cli.add_command(init_db_command)
    app.cli.add_command(db_group)
