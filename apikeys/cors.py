"""Opt-in CORS for browser dashboards on other origins: exact origins from APIKEYS_CORS_ORIGINS, off by default.

Only the dashboard API (and its OpenAPI document) takes part. /verify never
does: a proxy treats any 2xx from it as "allowed", so a preflight answered
there without a key would let an unauthenticated OPTIONS through to the upstream.
"""

from __future__ import annotations

from flask import request

ALLOWED_METHODS = "GET, POST, PATCH, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Api-Key"
MAX_AGE = "600"


def _shared(path: str) -> bool:
    return path.startswith("/dashboard/") or path == "/openapi.json"


def init_app(app) -> None:
    """Answer preflights and mark answers readable for the configured origins; nothing when none are configured."""
    # Browsers send an origin's scheme and host in lower case: so compare them.
    origins = frozenset(origin.lower() for origin in app.config["APIKEYS_CORS_ORIGINS"])
    if not origins:
        return

    @app.before_request
    def answer_preflight():
        # A preflight carries no credentials: it is answered before authentication, for a configured origin only.
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and request.headers.get("Origin") in origins
            and _shared(request.path)
        ):
            response = app.make_response(("", 204))
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE
            return response
        return None

    @app.after_request
    def allow_origin(response):
        if not _shared(request.path):
            return response
        origin = request.headers.get("Origin")
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate, Retry-After"
        response.vary.add("Origin")
        return response
