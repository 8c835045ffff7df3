"""The HTTP API as flask-smorest serves it: the Api answering in the envelope, the OpenAPI document, offline docs."""

from __future__ import annotations

import os

from flask import send_from_directory
from flask_smorest import Api

from apikeys import envelope
from apikeys import health
from apikeys import schemas
from apikeys.dashboard import limits
from apikeys.dashboard import views as dashboard_views
from apikeys.verification import headers
from apikeys.verification import views as verification_views


class EnvelopeApi(Api):
    """flask-smorest's Api, answering every HTTP error with our envelope."""

    ERROR_SCHEMA = schemas.ErrorSchema

    def handle_http_exception(self, error):
        return envelope.handle_http_exception(error)


def _swagger_ui_file(filename):
    import flask_swagger_ui  # Swagger UI's own files, pinned by the package's version

    return send_from_directory(os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist"), filename)


def init_app(app) -> None:
    """Register the API, its OpenAPI document and offline docs, and the error envelope."""
    app.config.setdefault("API_TITLE", "apikeys")
    app.config.setdefault("API_VERSION", "1.0.0")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", "/docs/assets/")
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    api_key = {"type": "apiKey", "in": "header", "name": headers.API_KEY}
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {
            "security": [{"bearerAuth": []}],  # every route but /verify and /healthz, which say otherwise
            "components": {"securitySchemes": {"bearerAuth": bearer, "apiKey": api_key}},
        },
    )
    app.url_map.converters["anypath"] = verification_views.AnyPathConverter
    app.add_url_rule("/docs/assets/<path:filename>", "swagger_ui_file", _swagger_ui_file)
    api = EnvelopeApi(app)
    api.register_converter(verification_views.AnyPathConverter, lambda converter: {"type": "string"})
    for blueprint in (dashboard_views.blp, verification_views.blp, health.blp):
        api.register_blueprint(blueprint)
    # A PATCH must change something: what UpdateKeySchema checks, in the document too.
    api.spec.components.schemas["UpdateKey"]["minProperties"] = 1
    verification_views.init_app(app)
    limits.init_app(app)
