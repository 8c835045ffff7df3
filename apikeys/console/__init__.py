"""The web console at /console: one page and its static files, a client of the public JSON API."""

from __future__ import annotations

import os

from flask import Blueprint
from flask import current_app
from flask import render_template

# No inline script or style anywhere: the page loads console.js and console.css, and
# talks to this origin only. data: images cover the favicon that keeps browsers from asking.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static/console",
    static_url_path="/static",
)


@bp.get("", strict_slashes=False)
def page():
    """Serve the console's single page; its script does the rest through the API."""
    response = current_app.make_response(
        render_template(
            "console/index.html",
            tenant_claim=current_app.config["APIKEYS_JWT_TENANT_CLAIM"],
            dev=current_app.extensions["apikeys.console"]["dev"],
        )
    )
    # The page shows secrets once (create, regenerate): no cache may keep a copy of it.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.after_request
def _security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    return response


def init_app(app) -> None:
    """Register the console (plain Flask, so it stays out of the OpenAPI document)."""
    # `apikeys serve --dev` (make run) sets APIKEYS_DEV for its gunicorn, whose when_ready prints a
    # console link with a token for tenant 'dev'. Read here as that hook reads it: only then does
    # the page take a link's token without asking, since anywhere else anyone can make such a link.
    app.extensions["apikeys.console"] = {"dev": bool(os.environ.get("APIKEYS_DEV"))}
    app.register_blueprint(bp)
