"""Migrations: the migrated schema is the declared one, old databases upgrade, init-db is idempotent."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC
from datetime import datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from apikeys import keys
from apikeys.cli.main import main
from apikeys.storage import migrate
from apikeys.storage import queries
from apikeys.storage import tables
from apikeys.verification.extension import verify_api_key
from tests.servers import empty_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An EMPTY database, no tables at all (it overrides conftest's migrated one in this module)."""
    with empty_database(request.param, tmp_path, "apikeys_migrations") as url:
        yield url


@pytest.fixture
def engine(database_url):
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def head_revision(conn: sa.Connection) -> str:
    return ScriptDirectory.from_config(migrate.alembic_config(conn)).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def test_database_starts_empty(engine):
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []


def test_migrated_schema_equals_declared_metadata(engine):
    """What the migrations build is what apikeys.storage.tables declares: autogenerate finds nothing to do."""
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), tables.metadata) == []
        assert current_revision(conn) == head_revision(conn)


def test_upgrades_a_database_of_the_first_release(engine, app):
    """A row written by the first release (schema 0001) is intact and verifies after upgrading to head."""
    migrate.upgrade(engine, "0001")
    secret = keys.new_secret("live")
    public_key = keys.new_public_key("live")
    created_at = datetime(2026, 11, 28, 12, 30, 15, 123000)  # naive UTC, as 0001 stores it
    last_used_at = datetime(2026, 11, 29, 8, 0, 0)
    # Raw SQL, every 0001 column: the migrations must not depend on today's insert_key defaults.
    with engine.begin() as conn:
        assert current_revision(conn) == "0001"
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, tenant_id, name, environment, public_key, secret_hash, active,"
                " created_at, last_used_at, failed_attempts, failed_window_start)"
                " VALUES (:id, :tenant_id, :name, :environment, :public_key, :secret_hash, :active,"
                " :created_at, :last_used_at, :failed_attempts, :failed_window_start)"
            ),
            {
                "id": "key_0001000100010001",
                "tenant_id": "acme",
                "name": "From the first release",
                "environment": "live",
                "public_key": public_key,
                "secret_hash": keys.hash_secret(secret, 4),
                "active": True,
                "created_at": created_at,
                "last_used_at": last_used_at,
                "failed_attempts": 0,
                "failed_window_start": None,
            },
        )

    migrate.upgrade(engine)

    with engine.connect() as conn:
        assert current_revision(conn) == head_revision(conn)
        row = queries.get_key(conn, "acme", "key_0001000100010001")
        full_row = queries.find_by_public_keys(conn, [public_key])[public_key]
    assert row._asdict() == {
        "id": "key_0001000100010001",
        "name": "From the first release",
        "environment": "live",
        "public_key": public_key,
        "active": True,
        "created_at": created_at.replace(tzinfo=UTC),
        "last_used_at": last_used_at.replace(tzinfo=UTC),
        "expires_at": None,
        "scopes": [],
        "meta": {},
        # No rate limit and no quota (0003).
        "rate_limit": None,
        "rate_limit_period": None,
        "quota_remaining": None,
        "quota_refill_amount": None,
        "quota_refill_interval": None,
        "quota_refilled_at": None,
    }
    assert full_row.tenant_id == "acme"
    assert full_row.secret_digest is None  # 0001 had no digests: the first verification takes bcrypt
    assert keys.check_secret(secret, full_row.secret_hash)
    with app.app_context():
        verified = verify_api_key(f"{public_key}.{secret}", "live")
    assert (verified.id, verified.tenant_id) == ("key_0001000100010001", "acme")
    with engine.connect() as conn:
        digest = queries.find_by_public_keys(conn, [public_key])[public_key].secret_digest
    assert digest == app.extensions["apikeys"].verifier.digest(secret)  # and written for every next one


def test_init_db_twice_is_idempotent(runner, engine, monkeypatch):
    """`apikeys init-db` creates the schema on an empty database, and a second run changes nothing."""
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)  # FlaskGroup sets it; put it back afterwards
    # The console script's own group, on the test app: what `apikeys init-db` runs.
    first = runner.invoke(main, ["init-db"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("Created the database at ")
    with engine.begin() as conn:
        queries.insert_key(
            conn,
            id="key_kept0kept0kept0k",
            tenant_id="acme",
            name="kept",
            environment="test",
            public_key=keys.new_public_key("test"),
            secret_hash=keys.hash_secret(keys.new_secret("test"), 4),
            created_at=tables.utcnow(),
        )

    second = runner.invoke(main, ["init-db"])
    assert second.exit_code == 0, second.output
    assert "is up to date (schema 0004)." in second.output
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision(conn)
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert queries.count_keys(conn, "acme") == 1
        assert compare_metadata(MigrationContext.configure(conn), tables.metadata) == []


def test_init_db_runs_from_the_test_runner(runner, engine):
    """`runner.invoke(args=["init-db"])`, as Flask's testing docs show it, runs with an app context."""
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0, repr(result.exception)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision(conn)


# Started by several hosts at once (each gunicorn master upgrades in on_starting), then released together.
UPGRADE_SCRIPT = """
import sys
import sqlalchemy as sa
from apikeys.storage import migrate
engine = sa.create_engine(sys.argv[1])
with engine.connect():  # open the pooled connection now, so the processes race on the migration alone
    pass
print("ready", flush=True)
sys.stdin.readline()
try:
    migrate.upgrade(engine)
finally:
    engine.dispose()
"""


def test_concurrent_upgrades_of_an_empty_database(database_url, engine):
    """Four processes upgrading one empty database at the same moment all succeed, and migrate it once."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_SCRIPT, database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for process in processes:
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        outcomes = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    errors = [[line for line in stderr.splitlines() if "Error:" in line][-1:] for _, stderr in outcomes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], errors
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision(conn)
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert compare_metadata(MigrationContext.configure(conn), tables.metadata) == []
