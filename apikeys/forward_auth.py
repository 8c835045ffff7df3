"""/verify: the endpoint reverse proxies call (forward auth) to check a request's X-Api-Key, for any method and path.

This is the hot path: its views read the request and write the answer by hand,
at a fraction of webargs' and marshmallow's cost; flask-smorest only documents
them (a test checks the answers against the documented schema). Under
create_app, apikeys.fast_path answers these paths before Flask with the same
answers (identity_answer is shared); the views serve wherever it is not installed.
"""

from __future__ import annotations

import json
import time

from flask import current_app
from flask import g
from flask import request
from flask.views import MethodView
from werkzeug.routing import Rule

from apikeys import errors
from apikeys import metrics
from apikeys import schemas
from apikeys import scopes
from apikeys import tenants
from apikeys.api import blp
from apikeys.keys import ENVIRONMENTS
from apikeys.schema_fields import Timestamp
from apikeys.verify import API_KEY_HEADER
from apikeys.verify import get_state
from apikeys.verify import verify_key

SCOPES_HEADER = "X-Api-Key-Required-Scopes"
_timestamp = Timestamp()._serialize


def verification(environment: str | None, required: list[str]):
    """Verify the request's X-Api-Key and answer with its identity; count the answer in the metrics by result."""
    started = time.perf_counter()
    state = get_state()
    try:
        verified = verify_key(state, request.headers.get(API_KEY_HEADER), environment, required)
    except errors.VerificationError as error:
        metrics.count_verification(state, error.code, time.perf_counter() - started)
        raise
    g.api_key = verified
    body, headers = identity_answer(verified)
    response = current_app.response_class(body, 200, headers, mimetype="application/json")
    metrics.count_verification(state, "VALID", time.perf_counter() - started)
    return response


def identity_answer(verified) -> tuple[str, list[tuple[str, str]]]:
    """Return the 200 answer's JSON body and identity headers for a verified key (the views and the fast path)."""
    data = {"valid": True, "id": verified.id, "tenantId": verified.tenant_id, "environment": verified.environment}
    data |= {"name": verified.name, "publicKey": verified.public_key, "scopes": list(verified.scopes)}
    data |= {"meta": verified.meta, "expiresAt": _timestamp(verified.expires_at, None, None)}
    headers = [
        ("X-Api-Key-Id", verified.id),
        # Plain ASCII on the wire whatever the tenant: percent-encoded (see apikeys.tenants).
        ("X-Tenant-Id", tenants.header_value(verified.tenant_id)),
        ("X-Api-Key-Environment", verified.environment),
        ("X-Api-Key-Scopes", " ".join(verified.scopes)),
    ]
    # json.dumps, not app.json.response: the same compact JSON, for less per request.
    body = json.dumps({"statusCode": 200, "data": data}, ensure_ascii=False, separators=(",", ":"))
    return body, headers


def required_scopes(header: str | None, parameters: list[str]) -> list[str]:
    """Return the scopes a /verify request requires (its header's, then its ``scope`` parameters'); raise ApiKeysError.

    Each is checked against the scope grammar: a value read as one joined string
    ("orders:,admin:users") could otherwise be granted by a prefix of it.
    """
    try:
        required = scopes.parse_required(header or "")
    except ValueError as error:
        raise errors.ApiKeysError(errors={SCOPES_HEADER: [str(error)]}) from None
    for value in parameters:
        try:
            named = scopes.parse_required(value)
        except ValueError as error:
            raise errors.ApiKeysError(errors={"scope": [str(error)]}) from None
        if not named:  # ?scope= asks for something: never read as asking for nothing
            raise errors.ApiKeysError(errors={"scope": ["Must name a scope."]})
        required += named
    return required


def _required_scopes(from_query: bool) -> list[str]:
    return required_scopes(request.headers.get(SCOPES_HEADER), request.args.getlist("scope") if from_query else [])


def verify_from_query():
    """Verify the API key in X-Api-Key, of any environment or the one asked for; any method."""
    environment = request.args.get("environment")
    if environment is not None and environment not in ENVIRONMENTS:
        raise errors.ApiKeysError(errors={"environment": [f"Must be one of: {', '.join(ENVIRONMENTS)}."]})
    return verification(environment, _required_scopes(from_query=True))


# Envoy's ext_authz appends the client's whole request path, query string included,
# to /verify: there the query belongs to the client, so nothing is read from it.
def verify_forwarded(subpath: str = ""):
    """Verify the API key in X-Api-Key for a proxy that forwards the original path; any method."""
    return verification(None, _required_scopes(from_query=False))


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
]
SCOPES_PARAMETER = {
    "in": "header",
    "name": SCOPES_HEADER,
    "required": False,
    "schema": {"type": "string", "pattern": scopes.REQUIRED_LIST_PATTERN},
    "description": "Scopes the key must grant, separated by spaces or commas (repeated header lines add up).",
}


def _documented(view, *, query: bool):
    """Document a /verify view in OpenAPI, but call it bare: flask-smorest's wrappers cost on the hot path."""
    parameters = [SCOPES_PARAMETER] + (QUERY_PARAMETERS if query else [])
    documented = blp.doc(security=[{"apiKey": []}], parameters=parameters)(view)
    documented = blp.alt_response(200, schema=schemas.VerifiedKeyEnvelopeSchema, success=True)(documented)
    for status, name in ((400, "BAD_REQUEST"), (401, "UNAUTHORIZED"), (403, "FORBIDDEN")):
        documented = blp.alt_response(status, response=name)(documented)
    view._apidoc = documented._apidoc  # what flask-smorest reads to write the document
    return view


@blp.route("/verify")
class Verification(MethodView):
    def get(self):
        """Verify the API key in X-Api-Key, of any environment or the one asked for; any method."""
        return verify_from_query()

    _documented(get, query=True)
    post = put = patch = delete = options = get


@blp.route("/verify/<anypath:subpath>", merge_slashes=False)
class ForwardedVerification(MethodView):
    def get(self, subpath):
        """Verify the API key in X-Api-Key for a proxy that forwards the original path; any method."""
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
