"""The HTTP API: the dashboard routes under /dashboard, /verify, and /healthz."""

from __future__ import annotations

import functools
import json
import os

import sqlalchemy as sa
from flask import g
from flask import request
from flask import send_from_directory
from flask.views import MethodView
from flask_smorest import Api
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.routing import PathConverter

from apikeys import db
from apikeys import errors
from apikeys import operations
from apikeys import schemas
from apikeys import store
from apikeys.keys import KEY_ID_PATTERN
from apikeys.tokens import authenticate
from apikeys.verify import API_KEY_HEADER
from apikeys.verify import get_state

SCOPES_HEADER = "X-Api-Key-Required-Scopes"


class ArgumentsParser(FlaskParser):
    """webargs, with invalid input a 400 (not 422), a body that is not JSON a 415, and deep nesting a 400."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        if not req.is_json:
            if req.content_length or "chunked" in req.headers.get("Transfer-Encoding", ""):
                raise UnsupportedMediaType()
            return super()._raw_load_json(req)
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            errors_ = {"body": ["The body is nested too deeply."]}
            raise errors.ApiKeysError("The request is not valid: body.", errors=errors_) from None
        except json.JSONDecodeError:
            raise  # webargs answers it: "The body is not valid JSON."
        except ValueError:  # Python reads no integer of more than 4,300 digits (sys.get_int_max_str_digits)
            errors_ = {"body": ["Holds a number too long to read."]}
            raise errors.ApiKeysError("The request is not valid: body.", errors=errors_) from None


class EnvelopeApi(Api):
    """flask-smorest's Api, answering every HTTP error with our envelope."""

    ERROR_SCHEMA = schemas.ErrorSchema

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)


blp = Blueprint("api-keys", __name__, description="Create, list, rotate, toggle, delete and verify API keys.")
blp.ARGUMENTS_PARSER = ArgumentsParser()

TOGGLE_MESSAGES = {True: "API key has been enabled.", False: "API key has been disabled."}
ERROR_RESPONSES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT"}
ERROR_RESPONSES |= {413: "REQUEST_ENTITY_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 503: "SERVICE_UNAVAILABLE"}
# What the 409 and 503 of key changes mean, in the operations' descriptions.
HASHING_LIMIT = (
    "A new secret takes a bcrypt hash, and a host hashes only APIKEYS_HASHING_CONCURRENCY at once. A request waits "
    f"up to {operations.HASHING_WAIT_SECONDS:g} s for its turn (not at all if another request already waits, at "
    f"bcrypt costs from {operations.LINE_LIMIT_ROUNDS}), then answers 503 HASHING_BUSY with Retry-After: 1, "
    "having changed nothing."
)
KEY_LIMIT = "A tenant holds at most APIKEYS_MAX_KEYS_PER_TENANT keys: one more is a 409 KEY_LIMIT_REACHED."
# OpenAPI links: what a client (or a stateful fuzzer) can do next with a created key.
KEY_ID_FROM_BODY = "$response.body#/data/id"
CREATED_KEY_LINKS = {
    operation[0].upper() + operation[1:]: {"operationId": operation, "parameters": {"key_id": KEY_ID_FROM_BODY}}
    for operation in ("getApiKey", "updateApiKey", "toggleApiKey", "regenerateApiKey", "deleteApiKey")
}


def dashboard(operation_id: str, status: int, schema, *, arguments=None, location="json", alt=(401,), doc=None):
    """Stack a dashboard view's decorators, authentication outermost: nobody's input is read before they are known."""

    def decorate(view):
        documented = view
        for code in alt:
            documented = blp.alt_response(code, response=ERROR_RESPONSES[code])(documented)
        documented = blp.response(status, schema)(documented)
        if arguments is not None:
            documented = blp.arguments(arguments, location=location)(documented)
        documented = blp.doc(operationId=operation_id, **(doc or {}))(documented)

        @functools.wraps(documented)
        def checked(*args, **kwargs):
            # An impossible id is a 404 before any query: no odd bytes (a NUL, say) reach the database driver.
            if "key_id" in kwargs and not KEY_ID_PATTERN.fullmatch(kwargs["key_id"]):
                raise errors.KeyNotFound()
            return documented(*args, **kwargs)

        return authenticate(checked)

    return decorate


@blp.after_request
def never_store(response):
    """Keep dashboard answers, secrets included, out of every cache (verification answers are not ours to set)."""
    if request.path.startswith("/dashboard/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _page(count, select, args) -> dict:
    """Return one page of the tenant's rows: ``count`` and ``select`` are store functions."""
    limit, page = args["limit"], args["page"]
    with get_state().engine.connect() as conn:
        total = count(conn, g.tenant)
        items = select(conn, g.tenant, limit, (page - 1) * limit)
    return {"data": {"items": items, "total": total, "page": page, "limit": limit}}


@blp.route("/dashboard/api-keys")
class ApiKeyCollection(MethodView):
    @dashboard("listApiKeys", 200, schemas.KeyPageEnvelopeSchema, arguments=schemas.PageArgsSchema, location="query")
    def get(self, args):
        """List the tenant's API keys, newest first."""
        return _page(store.count_keys, store.list_keys, args)

    @dashboard(
        "createApiKey",
        201,
        schemas.CreatedKeyEnvelopeSchema,
        arguments=schemas.CreateKeySchema,
        alt=(401, 409, 413, 415, 503),
        doc={"description": f"{HASHING_LIMIT} {KEY_LIMIT}"},
    )
    @blp.doc(responses={201: {"links": CREATED_KEY_LINKS}})
    def post(self, args):
        """Create an API key; its secret is shown only in this answer."""
        return {"data": operations.create_key(get_state(), g.tenant, g.actor, **args)}


@blp.route("/dashboard/api-keys/<string:key_id>")
class ApiKeyItem(MethodView):
    @dashboard("getApiKey", 200, schemas.KeyEnvelopeSchema, alt=(401, 404))
    def get(self, key_id):
        """Get one of the tenant's API keys."""
        return {"data": operations.get_key(get_state(), g.tenant, key_id)}

    @dashboard("updateApiKey", 200, schemas.KeyEnvelopeSchema, arguments=schemas.UpdateKeySchema, alt=(401, 404, 415))
    def patch(self, changes, key_id):
        """Change a key's name, expiry, scopes or metadata."""
        return {"data": operations.update_key(get_state(), g.tenant, g.actor, key_id, changes)}

    @dashboard("deleteApiKey", 200, schemas.DeletedSchema, alt=(401, 404))
    def delete(self, key_id):
        """Delete an API key for good."""
        operations.delete_key(get_state(), g.tenant, g.actor, key_id)
        return {}


@blp.route("/dashboard/api-keys/<string:key_id>/regenerate")
class ApiKeyRegeneration(MethodView):
    @dashboard(
        "regenerateApiKey",
        200,
        schemas.RegeneratedKeyEnvelopeSchema,
        arguments=schemas.RegenerateSchema(),
        alt=(401, 404, 409, 415, 503),
        doc={"requestBody": {"required": False}, "description": HASHING_LIMIT},
    )
    def post(self, args, key_id):
        """Give a key a new secret; the old one stops at once, or after gracePeriodSeconds."""
        grace = args.get("grace_period")
        return {"data": operations.regenerate_key(get_state(), g.tenant, g.actor, key_id, grace)}


@blp.route("/dashboard/api-keys/<string:key_id>/toggle")
class ApiKeyToggle(MethodView):
    @dashboard("toggleApiKey", 200, schemas.ToggledKeyEnvelopeSchema, alt=(401, 404))
    def post(self, key_id):
        """Disable an active key, or enable a disabled one."""
        active = operations.toggle_key(get_state(), g.tenant, g.actor, key_id)
        return {"data": {"id": key_id, "active": active, "message": TOGGLE_MESSAGES[active]}}


@blp.route("/dashboard/audit-log")
class AuditLog(MethodView):
    @dashboard("listAuditLog", 200, schemas.AuditPageEnvelopeSchema, arguments=schemas.PageArgsSchema, location="query")
    def get(self, args):
        """List who changed which of the tenant's keys, newest first."""
        return _page(store.count_audit_entries, store.list_audit_entries, args)


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(operationId="health", security=[])
    @blp.response(200, schemas.HealthEnvelopeSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self):
        """Answer 200 when the database answers and records a verifier key this host has."""
        state = get_state()
        try:
            db.check_recorded_verifier_key(state.engine, state.fingerprints)
        except sa.exc.SQLAlchemyError:
            raise errors.DatabaseUnavailable() from None
        except db.VerifierKeyMismatch:
            # Still answering verifications correctly, but slowly and without writing digests: take it out.
            raise errors.VerifierKeyMismatch() from None
        return {"data": {"status": "ok"}}


class AnyPathConverter(PathConverter):
    """Like ``path``, but also empty and with leading or doubled slashes, as a proxy may forward them."""

    regex = ".*?"
    part_isolating = False  # it spans slashes (werkzeug infers True from a regex without "/")


def _swagger_ui_file(filename):
    import flask_swagger_ui  # Swagger UI's own files, pinned by the package's version

    return send_from_directory(os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist"), filename)


def init_app(app) -> None:
    """Register the API, its OpenAPI document and offline docs, and the error envelope."""
    from apikeys import forward_auth  # its views document themselves on blp

    app.config.setdefault("API_TITLE", "apikeys")
    app.config.setdefault("API_VERSION", "1.0.0")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", "/docs/assets/")
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    api_key = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {
            "security": [{"bearerAuth": []}],  # every route but /verify and /healthz, which say otherwise
            "components": {"securitySchemes": {"bearerAuth": bearer, "apiKey": api_key}},
        },
    )
    app.url_map.converters["anypath"] = AnyPathConverter
    app.add_url_rule("/docs/assets/<path:filename>", "swagger_ui_file", _swagger_ui_file)
    api = EnvelopeApi(app)
    api.register_converter(AnyPathConverter, lambda converter: {"type": "string"})
    api.register_blueprint(blp)
    # A PATCH must change something: what UpdateKeySchema checks, in the document too.
    api.spec.components.schemas["UpdateKey"]["minProperties"] = 1
    forward_auth.init_app(app)
    operations.init_app(app)
