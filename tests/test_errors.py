"""The one error envelope, for errors from every layer."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from apikeys.storage import queries


def test_unexpected_exception_is_a_500_envelope_without_details(app, client, auth, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT secret_hash FROM api_keys", {}, Exception("disk I/O error"))

    monkeypatch.setattr(queries, "count_keys", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: TESTING would re-raise
    with caplog.at_level(logging.ERROR):
        response = client.get("/dashboard/api-keys", headers=auth())
    assert response.status_code == 500
    assert response.json == {
        "statusCode": 500,
        "error": "Internal Server Error",
        "message": "An unexpected error occurred.",
    }
    assert "secret_hash" not in response.get_data(as_text=True)
    assert "disk I/O error" in caplog.text  # logged for the operator, not shown to the client


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("get", "/nope", 404),
        ("put", "/dashboard/api-keys", 405),
        ("get", "/dashboard/api-keys/key_missing", 404),
    ],
)
def test_errors_share_one_shape(client, auth, method, path, status):
    response = getattr(client, method)(path, headers=auth())
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert set(response.json) <= {"statusCode", "error", "message", "code", "errors"}
    assert {"statusCode", "error", "message"} <= set(response.json)
    assert response.json["statusCode"] == status
