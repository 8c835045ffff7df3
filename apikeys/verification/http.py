"""/verify over HTTP: one function from a WSGI environ to the answer, and the middleware that serves it before Flask.

A proxy calls /verify once per request it forwards, so Flask's per-request work
(request context, routing, hooks, a werkzeug Response) would be most of what a
verification costs. VerifyMiddleware answers /verify and /verify/<anything>
with ``answer`` straight from the environ; the documented Flask views
(apikeys.verification.views) call the same function, so the two cannot differ.
Nothing is kept between requests: every verification reads the key's row.
"""

from __future__ import annotations

import json
import re
import time
from typing import NamedTuple
from urllib.parse import parse_qsl

from werkzeug.http import HTTP_STATUS_CODES

from apikeys import envelope
from apikeys import errors
from apikeys import logs
from apikeys import metrics
from apikeys import scopes
from apikeys import tenants
from apikeys.keys import ENVIRONMENTS
from apikeys.limits import MAX_COST
from apikeys.schema_fields import Timestamp
from apikeys.verification import headers
from apikeys.verification.core import VerifiedKey
from apikeys.verification.core import verify_key

_KEY = "HTTP_" + headers.API_KEY.upper().replace("-", "_")
_AUTHORIZATION = "HTTP_" + headers.AUTHORIZATION.upper()
_REQUIRED_SCOPES = "HTTP_" + headers.REQUIRED_SCOPES.upper().replace("-", "_")
_COST = "HTTP_" + headers.COST.upper().replace("-", "_")
_COST_PATTERN = re.compile(r"[0-9]{1,4}")
_timestamp = Timestamp()._serialize
# The same compact JSON as the app's provider, from one encoder made once (json.dumps makes one a call).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Answer(NamedTuple):
    """What /verify answers: status, headers and body, and the verified key when it is a 200."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    verified: VerifiedKey | None = None


# The status line as werkzeug writes it, so that the Flask views' answers are byte for byte the same.
_STATUS_LINES = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}


def verify_path(environ) -> str | None:
    """Return the path as routed if it is /verify or below it, else None (the request is the app's)."""
    raw = environ.get("PATH_INFO") or ""
    # Routed as werkzeug routes it: leading slashes collapse to one.
    path = "/" + raw.lstrip("/") if raw.startswith("//") else raw
    if path == "/verify" or (path.startswith("/verify/") and "\n" not in path):  # werkzeug's ".*?" stops at a LF
        return path
    return None


def answer(state, environ, *, forwarded: bool) -> Answer:
    """Verify the request's key (X-Api-Key or Authorization: Bearer) against what it requires; count the answer.

    ``forwarded``: a path below /verify/, where Envoy's ext_authz appends the client's own path and
    query string: there the query is the client's, and nothing is read from it.
    """
    started = time.perf_counter()
    query = None if forwarded else environ.get("QUERY_STRING")
    try:
        environment, parameters, cost = _read_query(query) if query else (None, [], None)
        required = required_scopes(environ.get(_REQUIRED_SCOPES), parameters)
        header = environ.get(_COST)
        cost = 1 if header is None and cost is None else request_cost(header, cost)
    except errors.ApiKeysError as error:  # the request's own requirements are malformed: not a verification
        return _error(error)
    try:
        key = environ.get(_KEY)
        authorization = environ.get(_AUTHORIZATION)  # one lookup: X-Api-Key alone costs no more than that
        if authorization is not None:
            key = headers.presented_key(key, authorization)
        verified = verify_key(state, key, environment, required, cost)
    except errors.VerificationError as error:
        metrics.count_verification(state, error.label, time.perf_counter() - started)
        return _error(error)
    body, identity = identity_answer(verified)
    data = body.encode()
    if verified.usage is not None:
        identity += verified.usage.headers().items()
    identity += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    metrics.count_verification(state, "valid", time.perf_counter() - started)
    return Answer(200, identity, data, verified)


def _read_query(query: str) -> tuple[str | None, list[str], str | None]:
    """Return the environment, scope and cost parameters as werkzeug reads request.args; raise ApiKeysError."""
    environment, parameters, cost = None, [], None
    # Strict UTF-8, invalid percent-escapes kept as they are; an empty value is a value.
    for name, value in parse_qsl(query.encode("latin1").decode(), keep_blank_values=True, errors="werkzeug.url_quote"):
        if name == "environment" and environment is None:
            environment = value
        elif name == "scope":
            parameters.append(value)
        elif name == "cost" and cost is None:
            cost = value
    if environment is not None and environment not in ENVIRONMENTS:
        raise errors.ApiKeysError(errors={"environment": [f"Must be one of: {', '.join(ENVIRONMENTS)}."]})
    return environment, parameters, cost


def request_cost(header: str | None, parameter: str | None) -> int:
    """Return what a request costs: its X-Api-Key-Cost header, else its ``cost`` parameter, else 1; raise ApiKeysError.

    A whole number from 0 to 1,000 in ASCII digits; two header lines ("1, 5") are refused, never one picked.
    """
    # An empty header is no header: how nginx removes one (proxy_set_header X-Api-Key-Cost "").
    header = header and header.strip(" \t")
    cost = 1
    # Both are checked, even when both are given: a malformed one is a mistake to report, not to ignore.
    for name, value in (("cost", parameter), (headers.COST, header)):
        if value:
            if not _COST_PATTERN.fullmatch(value) or int(value) > MAX_COST:
                raise errors.ApiKeysError(errors={name: [f"Must be a whole number from 0 to {MAX_COST}."]})
            cost = int(value)
        elif value is not None and name == "cost":
            raise errors.ApiKeysError(errors={name: [f"Must be a whole number from 0 to {MAX_COST}."]})
    return cost


def required_scopes(header: str | None, parameters: list[str]) -> list[str]:
    """Return the scopes a /verify request requires (its header's, then its ``scope`` parameters'); raise ApiKeysError.

    Each is checked against the scope grammar: a value read as one joined string
    ("orders:,admin:users") could otherwise be granted by a prefix of it.
    """
    if not header and not parameters:
        return []  # the usual request: nothing more than a valid key is asked for
    try:
        required = scopes.parse_required(header or "")
    except ValueError as error:
        raise errors.ApiKeysError(errors={headers.REQUIRED_SCOPES: [str(error)]}) from None
    for value in parameters:
        try:
            named = scopes.parse_required(value)
        except ValueError as error:
            raise errors.ApiKeysError(errors={"scope": [str(error)]}) from None
        if not named:  # ?scope= asks for something: never read as asking for nothing
            raise errors.ApiKeysError(errors={"scope": ["Must name a scope."]})
        required += named
    return required


def identity_answer(verified: VerifiedKey) -> tuple[str, list[tuple[str, str]]]:
    """Return the 200 answer's JSON body and the identity headers a proxy copies onto the request it forwards."""
    data = {"valid": True, "id": verified.id, "tenantId": verified.tenant_id, "environment": verified.environment}
    data |= {"name": verified.name, "publicKey": verified.public_key, "scopes": list(verified.scopes)}
    data |= {"meta": verified.meta, "expiresAt": _timestamp(verified.expires_at, None, None)}
    usage = verified.usage
    if usage is not None:
        if usage.window is not None:
            data["rateLimit"] = usage.rate_limit()
        if usage.credits is not None:
            data["quota"] = {"remaining": usage.credits}
    identity = [
        (headers.KEY_ID, verified.id),
        # Plain ASCII on the wire whatever the tenant: percent-encoded (see apikeys.tenants).
        (headers.TENANT_ID, tenants.header_value(verified.tenant_id)),
        (headers.ENVIRONMENT, verified.environment),
        (headers.SCOPES, " ".join(verified.scopes)),
    ]
    body = _COMPACT.encode({"statusCode": 200, "data": data})
    return body, identity


def _error(error: errors.ApiKeysError) -> Answer:
    extra = list(error.headers().items())
    if error.code:  # the refusal in headers too: nginx's auth_request keeps /verify's headers, not its body
        # The message as the body writes it between its quotes, so that a proxy can put it back there as it is.
        extra += [(headers.ERROR_CODE, error.code), (headers.ERROR_MESSAGE, json.dumps(error.message)[1:-1])]
    return _envelope(error.status, error.message, error.code, error.errors, extra)


def _envelope(status: int, message: str, code=None, field_errors=None, extra=()) -> Answer:
    """The error envelope as the app's JSON provider writes it (compact, ASCII, a final newline)."""
    body = envelope.error_body(status, message, code=code, errors=field_errors)
    data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
    return Answer(status, [*extra, ("Content-Type", "application/json"), ("Content-Length", str(len(data)))], data)


class VerifyMiddleware:
    """WSGI middleware that answers /verify and /verify/<anything> itself and passes every other request on."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self.state = app.extensions["apikeys"]
        self.log_verified = app.config["APIKEYS_LOG_VERIFIED"]

    def __call__(self, environ, start_response):
        """Answer a verification, or call the wrapped app."""
        path = verify_path(environ)
        if path is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            result = answer(self.state, environ, forwarded=path != "/verify")
        except Exception:
            # A fault (the database gone, say): answered here, once, as Flask answers one (logged, a 500 envelope).
            self.app.logger.error("Exception on %s [%s]", path, method, exc_info=True)
            result = _envelope(500, envelope.MESSAGES[500])
        if result.status != 200 or self.log_verified:
            # The path as request.path has it: the WSGI string's bytes read as UTF-8.
            shown = path.encode("latin1").decode(errors="replace")
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            verified = result.verified
            logs.log_request(
                method, shown, result.status, duration_ms, verified and verified.tenant_id, verified and verified.id
            )
        start_response(_STATUS_LINES[result.status], result.headers)
        return [] if method == "HEAD" else [result.body]


def init_app(app) -> None:
    """Wrap the app's WSGI callable so /verify is answered before Flask's request machinery."""
    app.wsgi_app = VerifyMiddleware(app, app.wsgi_app)
