"""The database layer: an error from the database never carries the values bound to the statement."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apikeys.storage import tables
from apikeys.verification import extension


def _insert_again(engine: sa.Engine, row: dict) -> sa.exc.DBAPIError:
    """Insert ``row`` a second time (same id) and return the database's error."""
    with pytest.raises(sa.exc.IntegrityError) as caught, engine.begin() as conn:
        conn.execute(sa.insert(tables.api_keys).values(**row))
    return caught.value


def test_a_database_error_hides_the_bound_values(app, make_key):
    tenant = "tenant-bound-7f3a9c"
    created = make_key(tenant=tenant)
    engine = extension.get_engine(app)
    with engine.connect() as conn:
        row = conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.id == created["id"])).mappings().one()
    row = dict(row)
    secret_hash = row["secret_hash"]

    error = _insert_again(engine, row)  # a real error with the row's values bound to it
    text = f"{error}\n{error!r}"
    assert "parameters hidden" in text
    assert secret_hash not in text
    assert tenant not in text

    # The same statement on an engine without hide_parameters shows them: the check above can fail.
    plain = sa.create_engine(engine.url)
    try:
        shown = _insert_again(plain, row)
    finally:
        plain.dispose()
    assert tenant in str(shown)
