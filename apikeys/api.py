"""The HTTP API as flask-smorest serves it: the Api answering in the envelope, the OpenAPI document, offline docs."""

from __future__ import annotations

import importlib.metadata
import os

from flask import Response
from flask import send_from_directory
from flask_smorest import Api

from apikeys import envelope
from apikeys import health
from apikeys import schemas
from apikeys.dashboard import limits
from apikeys.dashboard import usage_views  # noqa: F401 (its routes join the dashboard's blueprint)
from apikeys.dashboard import views as dashboard_views
from apikeys.verification import headers
from apikeys.verification import views as verification_views


class EnvelopeApi(Api):
    """flask-smorest's Api, answering every HTTP error with our envelope."""

    ERROR_SCHEMA = schemas.ErrorSchema

    def handle_http_exception(self, error):
        return envelope.handle_http_exception(error)


# A key on a dark tile: /docs has no icon of its own, so browsers ask for /favicon.ico (the console
# sets a data: icon). Scripts cannot run in an image, and the CSP keeps it so if it is opened directly.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="6" fill="#1f2937"/>'
    b'<circle cx="11" cy="16" r="6" fill="none" stroke="#fbbf24" stroke-width="3"/>'
    b'<path d="M17 16h11M24 16v5M28 16v4" stroke="#fbbf24" stroke-width="3"/>'
    b"</svg>"
)
FAVICON_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "Content-Security-Policy": "default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}


def package_version() -> str:
    """Return the installed apikeys package's version: the OpenAPI document's version."""
    try:
        return importlib.metadata.version("apikeys")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # run from a source tree that was never installed: serve rather than fail


def _favicon():
    return Response(FAVICON, mimetype="image/svg+xml", headers=FAVICON_HEADERS)


def _swagger_ui_file(filename):
    import flask_swagger_ui  # Swagger UI's own files, pinned by the package's version

    return send_from_directory(os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist"), filename)


def init_app(app) -> None:
    """Register the API, its OpenAPI document and offline docs, and the error envelope."""
    app.config.setdefault("API_TITLE", "apikeys")
    app.config.setdefault("API_VERSION", package_version())
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", "/docs/assets/")
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    api_key = {"type": "apiKey", "in": "header", "name": headers.API_KEY}
    # /verify also reads the key from Authorization: Bearer (its other scheme: either one does).
    api_key_bearer = {
        "type": "http",
        "scheme": "bearer",
        "description": "The full API key: pk_{env}_{publicId}.sk_{env}_{secret}.",
    }
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {
            "security": [{"bearerAuth": []}],  # every route but /verify, /healthz and /readyz, which say otherwise
            "components": {
                "securitySchemes": {"bearerAuth": bearer, "apiKey": api_key, "apiKeyBearer": api_key_bearer}
            },
        },
    )
    app.url_map.converters["anypath"] = verification_views.AnyPathConverter
    app.add_url_rule("/docs/assets/<path:filename>", "swagger_ui_file", _swagger_ui_file)
    app.add_url_rule("/favicon.ico", "favicon", _favicon)
    api = EnvelopeApi(app)
    api.register_converter(verification_views.AnyPathConverter, lambda converter: {"type": "string"})
    for blueprint in (dashboard_views.blp, verification_views.blp, health.blp):
        api.register_blueprint(blueprint)
    # A PATCH must change something: what UpdateKeySchema checks, in the document too.
    api.spec.components.schemas["UpdateKey"]["minProperties"] = 1
    verification_views.init_app(app)
    limits.init_app(app)
