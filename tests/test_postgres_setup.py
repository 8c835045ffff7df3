"""Production PostgreSQL set-up: a role that may not create tables, a missing database, postgres:// URLs, the docs.

Each case runs the real command against the local PostgreSQL server with a throwaway role and
database, as an operator following docs/scaling.md would.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from apikeys import config
from tests.servers import POSTGRES_URL
from tests.servers import ROOT
from tests.servers import TEST_VERIFIER_KEY
from tests.servers import free_port
from tests.servers import inherited_env
from tests.servers import postgres_database

APIKEYS = os.path.join(os.path.dirname(sys.executable), "apikeys")


@contextlib.contextmanager
def superuser():
    """An autocommit connection to the server as the test suite's superuser."""
    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@contextlib.contextmanager
def new_role():
    """Yield the name of a new login role that owns nothing, dropped afterwards."""
    name = f"apikeys_role_{uuid.uuid4().hex[:12]}"
    with superuser() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{name}" LOGIN'))
    try:
        yield name
    finally:
        with superuser() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))


@pytest.fixture
def role_without_ownership():
    """A fresh database owned by the superuser, and a role that may connect to it but owns nothing."""
    # The role is dropped last: by then the database, which the test may have given it, is gone.
    with new_role() as role, postgres_database("apikeys_notowner") as owned_url:
        database = sa.make_url(owned_url).database
        yield role, database, sa.make_url(owned_url).set(username=role, password=None)


def apikeys(tmp_path, url, *args, timeout=60):
    env = {**inherited_env(), "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"), "APIKEYS_DATABASE_URL": str(url)}
    # Both secrets set, as in production: a first start generates neither (with a warning line).
    env.update(APIKEYS_JWT_SECRET="s" * 64, APIKEYS_VERIFIER_KEY=TEST_VERIFIER_KEY)
    return subprocess.run([APIKEYS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def as_url(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


def test_init_db_as_a_role_that_does_not_own_the_database_says_how_to_grant_it_in_one_line(
    tmp_path, role_without_ownership
):
    role, database, url = role_without_ownership
    result = apikeys(tmp_path, as_url(url), "init-db")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"role {role} may not create tables in schema public of database {database}" in lines[0]
    fix = f"ALTER DATABASE {database} OWNER TO {role};"
    assert fix in lines[0] and f"GRANT CREATE ON SCHEMA public TO {role};" in lines[0]

    # The advice works: run as a superuser, it lets the same command create the tables.
    with superuser() as conn:
        conn.execute(sa.text(fix))
    fixed = apikeys(tmp_path, as_url(url), "init-db")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.startswith("Created the database at ")


def test_serve_as_such_a_role_stops_with_the_same_one_line(tmp_path, role_without_ownership):
    role, database, url = role_without_ownership
    result = apikeys(tmp_path, as_url(url), "serve", "--port", str(free_port()), "--workers", "1")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert refusals == [
        f"apikeys cannot start: The role {role} may not create tables in schema public of database {database}: "
        f"run `ALTER DATABASE {database} OWNER TO {role};` (or, in that database, "
        f"`GRANT CREATE ON SCHEMA public TO {role};`) as a superuser (docs/scaling.md)."
    ]
    assert "permission denied" not in result.stderr


def test_a_missing_database_is_named_as_missing_with_the_statement_that_makes_it(tmp_path):
    name = f"apikeys_missing_{uuid.uuid4().hex[:12]}"
    url = sa.make_url(POSTGRES_URL).set(database=name)
    result = apikeys(tmp_path, as_url(url), "init-db")
    assert result.returncode != 0
    server = f"{url.host}:{url.port or 5432}"
    assert result.stderr.strip().splitlines() == [
        f"Error: The database {name} does not exist on {server}: create it with "
        f"`CREATE DATABASE {name} OWNER {url.username};` as a superuser (docs/scaling.md)."
    ]
    assert "does not answer" not in result.stderr


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_url_without_a_driver_reads_as_psycopg_3(scheme):
    settings = {"APIKEYS_DATABASE_URL": f"{scheme}://apikeys:pw@db.internal:5432/apikeys"}
    config.check(settings)
    assert settings["APIKEYS_DATABASE_URL"] == "postgresql+psycopg://apikeys:pw@db.internal:5432/apikeys"


def test_a_postgres_url_as_heroku_gives_it_connects_and_creates_the_database(tmp_path):
    with postgres_database("apikeys_heroku") as url:
        heroku = re.sub(r"\A[a-z+]+://", "postgres://", url)
        assert heroku.startswith("postgres://")
        result = apikeys(tmp_path, heroku, "init-db")
        assert result.returncode == 0, result.stderr
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert "api_keys" in sa.inspect(conn).get_table_names()
        finally:
            engine.dispose()


def test_the_documented_statements_set_up_a_database_init_db_can_use(tmp_path):
    text = (ROOT / "docs" / "scaling.md").read_text()
    sql = re.search(r"```sql\n(.*?)```", text, re.S).group(1)
    statements = [line for line in sql.splitlines() if line.strip()]
    assert statements == [
        "CREATE ROLE apikeys LOGIN PASSWORD 'a-long-random-password';",
        "CREATE DATABASE apikeys OWNER apikeys;",
    ]
    documented_url = re.search(r"export APIKEYS_DATABASE_URL='([^']+)'", text).group(1)
    # The same statements and URL, with a throwaway name for the role and the database, on this server.
    name = f"apikeys_docs_{uuid.uuid4().hex[:12]}"
    server = sa.make_url(POSTGRES_URL)
    url = documented_url.replace("db.internal:5432", f"{server.host}:{server.port or 5432}")
    url = re.sub(r"\bapikeys\b", name, url)
    with superuser() as conn:
        for statement in statements:
            conn.execute(sa.text(re.sub(r"\bapikeys\b", name, statement)))
    try:
        result = apikeys(tmp_path, url, "init-db")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Created the database at postgresql+psycopg://{name}:***@")
    finally:
        with superuser() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
