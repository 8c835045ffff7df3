"""Opt-in CORS for browser dashboards on other origins: exact origins from APIKEYS_CORS_ORIGINS, off by default."""

from __future__ import annotations

from flask import request

ALLOWED_METHODS = "GET, POST, PATCH, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Api-Key"
MAX_AGE = "600"


def init_app(app) -> None:
    """Answer preflights and mark answers readable for the configured origins; nothing when none are configured."""
    origins = frozenset(app.config["APIKEYS_CORS_ORIGINS"])
    if not origins:
        return

    @app.before_request
    def answer_preflight():
        # A preflight carries no credentials: it is answered before authentication.
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = app.make_response(("", 204))
            if request.headers.get("Origin") in origins:
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = MAX_AGE
            return response
        return None

    @app.after_request
    def allow_origin(response):
        origin = request.headers.get("Origin")
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate, Retry-After"
        response.vary.add("Origin")
        return response
