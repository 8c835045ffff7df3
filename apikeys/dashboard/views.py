"""The /dashboard routes: a tenant's keys and audit log, behind its bearer JWT."""

from __future__ import annotations

import functools
import json

from flask import g
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import UnsupportedMediaType

from apikeys import errors
from apikeys import schemas
from apikeys.dashboard import limits
from apikeys.dashboard import operations
from apikeys.keys import KEY_ID_PATTERN
from apikeys.storage import queries
from apikeys.tokens import authenticate
from apikeys.verification.extension import get_state


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


blp = Blueprint("api-keys", __name__, description="Create, list, rotate, toggle and delete API keys.")
blp.ARGUMENTS_PARSER = ArgumentsParser()

TOGGLE_MESSAGES = {True: "API key has been enabled.", False: "API key has been disabled."}
ERROR_RESPONSES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT"}
ERROR_RESPONSES |= {413: "REQUEST_ENTITY_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 503: "SERVICE_UNAVAILABLE"}
# What the 409 and 503 of key changes mean, in the operations' descriptions.
HASHING_LIMIT = (
    "A new secret takes a bcrypt hash, and a host hashes only APIKEYS_HASHING_CONCURRENCY at once. A request waits "
    f"up to {limits.HASHING_WAIT_SECONDS:g} s for its turn (not at all if another request already waits, at "
    f"bcrypt costs from {limits.LINE_LIMIT_ROUNDS}), then answers 503 HASHING_BUSY with Retry-After: 1, "
    "having changed nothing."
)
ADD_CREDITS = (
    "Adds to the credits left now (after a due refill), in one statement with the verifications that take them, "
    "so none they took is given back, as a PATCH of quota.remaining computed from an earlier read would. A key "
    "without a quota is a 409 NO_QUOTA; a sum over 10^12 is a 400. Audited as key.updated."
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
        return _page(queries.count_keys, queries.list_keys, args)

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


@blp.route("/dashboard/api-keys/<string:key_id>/credits")
class ApiKeyCredits(MethodView):
    @dashboard(
        "addApiKeyCredits",
        200,
        schemas.KeyEnvelopeSchema,
        arguments=schemas.AddCreditsSchema,
        alt=(401, 404, 409, 415),
        doc={"description": ADD_CREDITS},
    )
    def post(self, args, key_id):
        """Add credits to a key's quota."""
        return {"data": operations.add_credits(get_state(), g.tenant, g.actor, key_id, args["add"])}


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
        return _page(queries.count_audit_entries, queries.list_audit_entries, args)
