"""CORS: a configured origin is matched as browsers send it, scheme and host in lower case."""

from __future__ import annotations

import pytest

from apikeys import create_app
from apikeys.tokens import issue_token
from apikeys.verification import extension

BROWSER_ORIGIN = "https://admin.example.com"  # what a browser sends for https://Admin.Example.com


# CORS reads no table: SQLite is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_origin_configured_in_mixed_case_allows_the_browsers_lower_case_origin(config, tmp_path):
    config["APIKEYS_CORS_ORIGINS"] = "https://Admin.Example.com"  # as the environment gives it
    app = create_app(config, instance_path=str(tmp_path / "cors"))
    try:
        client = app.test_client()
        preflight = client.options(
            "/dashboard/api-keys",
            headers={
                "Origin": BROWSER_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == BROWSER_ORIGIN
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        listed = client.get(
            "/dashboard/api-keys",
            headers={"Authorization": f"Bearer {issue_token(app.config, 'acme', 60)}", "Origin": BROWSER_ORIGIN},
        )
        assert listed.status_code == 200
        assert listed.headers["Access-Control-Allow-Origin"] == BROWSER_ORIGIN
    finally:
        extension.get_engine(app).dispose()
