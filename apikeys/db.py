"""The schema, the engine, and getting a database ready to serve (migrations, the verifier key's fingerprint)."""

from __future__ import annotations

import os
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from apikeys import instance

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
    sa.Column("secret_hash", sa.String(64), nullable=False),  # bcrypt: the hash of record
    sa.Column("secret_digest", sa.String(80), nullable=True),  # "tag:HMAC-SHA256", what verification compares
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("scopes", sa.JSON, nullable=False, default=list, server_default=sa.text("'[]'")),
    sa.Column("meta", sa.JSON, nullable=False, default=dict, server_default=sa.text("'{}'")),
    # The secret a grace-period rotation replaced, valid until previous_expires_at.
    sa.Column("previous_secret_hash", sa.String(64), nullable=True),
    sa.Column("previous_secret_digest", sa.String(80), nullable=True),
    sa.Column("previous_expires_at", UTCDateTime, nullable=True),
    sa.CheckConstraint("environment IN ('live', 'test')", name="ck_api_keys_environment"),
    sa.UniqueConstraint("public_key", name="uq_api_keys_public_key"),
    sa.Index("ix_api_keys_tenant_created", "tenant_id", "created_at", "id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    # The id orders entries exactly, even two in the same millisecond.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_audit_log_tenant_id", "tenant_id", "id"),
)

# Facts about the database itself, such as the fingerprint of the verifier key its digests are written under.
settings = sa.Table(
    "apikeys_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
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
    return app.config["APIKEYS_DATABASE_URL"] or "sqlite:///" + os.path.join(app.instance_path, "apikeys.sqlite3")


def create_engine(app) -> sa.Engine:
    """Create the engine the configuration asks for."""
    url = sa.make_url(database_url(app))
    config = app.config
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
            url = url.set(database=os.path.join(app.instance_path, url.database))
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


def get_engine(app=None) -> sa.Engine:
    """Return the app's engine."""
    from apikeys.verify import get_state

    return get_state(app or current_app).engine


class VerifierKeyMismatch(RuntimeError):
    """This host's verifier keys do not include the one the database's digests are written under."""


FINGERPRINT = "verifier_key_fingerprint"
MISMATCH_MESSAGE = (
    "This host's verifier keys (APIKEYS_VERIFIER_KEY, APIKEYS_VERIFIER_KEY_PREVIOUS) do not include the key this "
    "database's digests are written under: give every host the database's key, as APIKEYS_VERIFIER_KEY or, during "
    "a change of key, in APIKEYS_VERIFIER_KEY_PREVIOUS (docs/security.md)."
)


def recorded_fingerprint(engine: sa.Engine) -> str | None:
    """Return the fingerprint of the verifier key the database's digests are written under, if one is recorded."""
    with engine.connect() as conn:
        return conn.execute(sa.select(settings.c.value).where(settings.c.name == FINGERPRINT)).scalar()


def check_verifier_key(engine: sa.Engine, fingerprint: str, known=()) -> bool:
    """Record ``fingerprint`` if the database has none; raise VerifierKeyMismatch unless the recorded one is this
    key or one of ``known`` (the host's previous keys). Tell whether it recorded."""
    recorded = recorded_fingerprint(engine)
    if recorded is None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(settings).values(name=FINGERPRINT, value=fingerprint))
            return True
        except sa.exc.IntegrityError:  # another host recorded one at the same moment
            recorded = recorded_fingerprint(engine)
    if recorded != fingerprint and recorded not in known:
        raise VerifierKeyMismatch(MISMATCH_MESSAGE)
    return False


def check_recorded_verifier_key(engine: sa.Engine, known) -> None:
    """Raise VerifierKeyMismatch if the database records a verifier key that is not one of ``known``; record nothing."""
    recorded = recorded_fingerprint(engine)
    if recorded is not None and recorded not in known:
        raise VerifierKeyMismatch(MISMATCH_MESSAGE)


def adopt_verifier_key(engine: sa.Engine, fingerprint: str) -> None:
    """Make ``fingerprint`` the database's verifier key; every key then takes the bcrypt path once."""
    with engine.begin() as conn:
        conn.execute(sa.delete(settings).where(settings.c.name == FINGERPRINT))
        conn.execute(sa.insert(settings).values(name=FINGERPRINT, value=fingerprint))


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision``, the newest migration by default."""
    from apikeys import migrate  # Alembic loads only for this

    migrate.upgrade(engine, revision)


def prepare(app) -> None:
    """Get the app's database ready to serve: create or upgrade the schema, then check the verifier key."""
    from apikeys.verify import get_state

    state = get_state(app)
    upgrade(state.engine)
    check_verifier_key(state.engine, state.verifier.fingerprint, state.fingerprints)
