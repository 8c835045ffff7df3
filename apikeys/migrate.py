"""Schema migrations with Alembic, run from Python against an engine."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config


def alembic_config(connection: sa.Connection) -> Config:
    """Return an Alembic configuration that runs on ``connection``."""
    config = Config()
    config.set_main_option("script_location", "apikeys:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default)."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
