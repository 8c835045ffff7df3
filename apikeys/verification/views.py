"""/verify in the OpenAPI document, and served by Flask views where apikeys.verification.http's middleware is not.

Both call apikeys.verification.http.answer: the same answer either way. Any
method reaches /verify, as a proxy may forward any (PROPFIND, PURGE...).
"""

from __future__ import annotations

from flask import current_app
from flask import g
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.routing import PathConverter
from werkzeug.routing import Rule

from apikeys import schemas
from apikeys import scopes
from apikeys.keys import ENVIRONMENTS
from apikeys.limits import MAX_COST
from apikeys.verification import headers
from apikeys.verification.extension import get_state
from apikeys.verification.http import answer

blp = Blueprint("verify", __name__, description="Verify an API key: for reverse proxies (forward auth) and services.")


class AnyPathConverter(PathConverter):
    """Like ``path``, but also empty and with leading or doubled slashes, as a proxy may forward them."""

    regex = ".*?"
    part_isolating = False  # it spans slashes (werkzeug infers True from a regex without "/")


def verify_from_query():
    """Verify the key in X-Api-Key or Authorization: Bearer, of any environment or the one asked; any method."""
    return _respond(forwarded=False)


# Envoy's ext_authz appends the client's whole request path, query string included,
# to /verify: there the query belongs to the client, so nothing is read from it.
def verify_forwarded(subpath: str = ""):
    """Verify the key in X-Api-Key or Authorization: Bearer, for a proxy forwarding the original path."""
    return _respond(forwarded=True)


def _respond(*, forwarded: bool):
    result = answer(get_state(), request.environ, forwarded=forwarded)
    g.api_key = result.verified  # for the request log's tenant and key
    return current_app.response_class(result.body, result.status, result.headers)


QUERY_PARAMETERS = [
    {
        "in": "query",
        "name": "environment",
        "required": False,
        "schema": {"type": "string", "enum": list(ENVIRONMENTS)},
        "description": "Require a key of this environment.",
    },
    {
        "in": "query",
        "name": "scope",
        "required": False,
        "schema": {"type": "array", "items": {"type": "string", "pattern": scopes.REQUIRED_PATTERN}},
        "explode": True,
        "description": "Require the key to grant this scope (or several, separated by spaces or commas); repeatable.",
    },
    {
        "in": "query",
        "name": "cost",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_COST, "default": 1},
        "description": f"What the request takes from the key's quota, if {headers.COST} is not sent; 0 only checks.",
    },
]
SCOPES_PARAMETER = {
    "in": "header",
    "name": headers.REQUIRED_SCOPES,
    "required": False,
    "schema": {"type": "string", "pattern": scopes.REQUIRED_LIST_PATTERN},
    "description": "Scopes the key must grant, separated by spaces or commas (repeated header lines add up).",
}


COST_PARAMETER = {
    "in": "header",
    "name": headers.COST,
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_COST, "default": 1},
    "description": "What the request takes from the key's quota (set by the proxy per route); 0 only checks.",
}
LIMIT_REFUSALS = (
    "429 RATE_LIMITED: the key's rate limit is reached (Retry-After, RateLimit-Limit, -Remaining, -Reset); "
    "429 USAGE_EXCEEDED: the key has fewer credits than the request costs (X-Api-Key-Quota-Remaining; Retry-After "
    "until its refill, if it has one). A refused request consumes nothing. 503 RATE_LIMIT_UNAVAILABLE only with "
    "APIKEYS_RATE_LIMIT_ON_ERROR=closed, when the rate-limit store does not answer."
)


def _documented(view, *, query: bool):
    """Document a /verify view in OpenAPI, but call it bare: flask-smorest's wrappers cost on the hot path."""
    parameters = [SCOPES_PARAMETER, COST_PARAMETER] + (QUERY_PARAMETERS if query else [])
    documented = blp.doc(security=[{"apiKey": []}, {"apiKeyBearer": []}], parameters=parameters)(view)
    documented = blp.alt_response(200, schema=schemas.VerifiedKeyEnvelopeSchema, success=True)(documented)
    for status, name in ((400, "BAD_REQUEST"), (401, "UNAUTHORIZED"), (403, "FORBIDDEN")):
        documented = blp.alt_response(status, response=name)(documented)
    for status, name in ((429, "TOO_MANY_REQUESTS"), (503, "SERVICE_UNAVAILABLE")):
        documented = blp.alt_response(status, response=name, description=LIMIT_REFUSALS)(documented)
    view._apidoc = documented._apidoc  # what flask-smorest reads to write the document
    return view


@blp.route("/verify")
class Verification(MethodView):
    def get(self):
        """Verify the key in X-Api-Key or Authorization: Bearer, of any environment or the one asked; any method."""
        return verify_from_query()

    _documented(get, query=True)
    post = put = patch = delete = options = get


@blp.route("/verify/<anypath:subpath>", merge_slashes=False)
class ForwardedVerification(MethodView):
    def get(self, subpath):
        """Verify the key in X-Api-Key or Authorization: Bearer, for a proxy forwarding the original path."""
        return verify_forwarded(subpath)

    _documented(get, query=False)
    post = put = patch = delete = options = get


def init_app(app) -> None:
    """Let every other method (PROPFIND, MKCOL, PURGE...) reach /verify too, as a proxy may forward any."""
    for path, endpoint, view in (
        ("/verify", "verify_any_method", verify_from_query),
        ("/verify/<anypath:subpath>", "verify_forwarded_any_method", verify_forwarded),
    ):
        app.url_map.add(Rule(path, endpoint=endpoint, methods=None, merge_slashes=False))
        app.view_functions[endpoint] = view
