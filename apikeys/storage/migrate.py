"""Schema migrations with Alembic, run from Python against an engine."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from apikeys.storage.fingerprints import check_verifier_key

# Any number unique to apikeys: the PostgreSQL advisory lock its migrations hold.
MIGRATION_LOCK = 0x61706B6579


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Return an Alembic configuration that runs on ``connection`` (None: one that only reads the scripts)."""
    config = Config()
    config.set_main_option("script_location", "apikeys.storage:migrations")
    config.attributes["connection"] = connection
    return config


def history() -> list[tuple[str, str]]:
    """Return every schema revision, newest first, each with its one-line description."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return [(script.revision, script.doc) for script in scripts.walk_revisions()]


def _lock_for_migration(connection: sa.Connection) -> None:
    # Several hosts (each gunicorn master) may upgrade one database at the same
    # moment: the first takes the lock and migrates, the others wait and then
    # find nothing left to do.
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # pysqlite would run DDL outside any transaction; take the write lock up front.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default), one migrator at a time."""
    with engine.begin() as connection:
        _lock_for_migration(connection)
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine: sa.Engine) -> str | None:
    """Return the database's schema revision, or None for a database without our schema."""
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def prepare(engine: sa.Engine, fingerprint: str, known=()) -> None:
    """Get a database ready to serve: create or upgrade the schema, then record or check the verifier key."""
    upgrade(engine)
    check_verifier_key(engine, fingerprint, known)
