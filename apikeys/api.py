"""The HTTP API: the dashboard routes under /dashboard/api-keys, /verify and /healthz."""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app
from flask import g
from flask import request
from flask.views import MethodView
from flask_smorest import Api
from flask_smorest import Blueprint
from flask_smorest import abort
from webargs.flaskparser import FlaskParser
from werkzeug.routing import PathConverter

from apikeys import db
from apikeys import errors
from apikeys import manage
from apikeys import store
from apikeys.keys import ENVIRONMENTS
from apikeys.keys import KEY_ID_PATTERN
from apikeys.schemas import CreatedKeyEnvelopeSchema
from apikeys.schemas import CreateKeySchema
from apikeys.schemas import DeletedSchema
from apikeys.schemas import ErrorSchema
from apikeys.schemas import HealthEnvelopeSchema
from apikeys.schemas import KeyEnvelopeSchema
from apikeys.schemas import KeyPageEnvelopeSchema
from apikeys.schemas import PageArgsSchema
from apikeys.schemas import RegeneratedKeyEnvelopeSchema
from apikeys.schemas import ToggledKeyEnvelopeSchema
from apikeys.schemas import VerifiedKeyEnvelopeSchema
from apikeys.tokens import current_tenant
from apikeys.verify import API_KEY_HEADER
from apikeys.verify import verify_api_key


class Parser(FlaskParser):
    """Invalid input is a 400, not webargs' default 422."""

    DEFAULT_VALIDATION_STATUS = 400


class ApiKeysApi(Api):
    """flask-smorest's Api with our error envelope."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)


blp = Blueprint("api-keys", __name__, description="Create, list, rotate, toggle, delete and verify API keys.")
blp.ARGUMENTS_PARSER = Parser()

TOGGLE_MESSAGES = {True: "API key has been enabled.", False: "API key has been disabled."}
BEARER = [{"bearerAuth": []}]
API_KEY = [{"apiKey": []}]


# OpenAPI links: what a client (or a stateful fuzzer) can do next with a created key.
CREATED_KEY_LINKS = {
    name: {"operationId": operation, "parameters": {"key_id": "$response.body#/data/id"}}
    for name, operation in [
        ("GetApiKey", "getApiKey"),
        ("ToggleApiKey", "toggleApiKey"),
        ("RegenerateApiKey", "regenerateApiKey"),
        ("DeleteApiKey", "deleteApiKey"),
    ]
}


def _not_found():
    abort(404, message="API key not found.", code="API_KEY_NOT_FOUND")


def _tenant_and_id(key_id: str) -> str:
    """Return the request's tenant, after checking that ``key_id`` can be an id at all."""
    tenant = current_tenant()  # 401 before 404: a stranger learns nothing about ids
    if not KEY_ID_PATTERN.fullmatch(key_id):
        _not_found()  # and no odd bytes (a NUL, say) ever reach the database driver
    return tenant


@blp.route("/dashboard/api-keys")
class ApiKeys(MethodView):
    @blp.doc(security=BEARER, operationId="listApiKeys")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, KeyPageEnvelopeSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    def get(self, args):
        """List the tenant's API keys, newest first."""
        tenant = current_tenant()
        with db.get_engine().connect() as conn:
            total = store.count_keys(conn, tenant)
            items = store.list_keys(conn, tenant, args["limit"], (args["page"] - 1) * args["limit"])
        return {"data": {"items": items, "total": total, "page": args["page"], "limit": args["limit"]}}

    @blp.doc(security=BEARER, operationId="createApiKey", responses={201: {"links": CREATED_KEY_LINKS}})
    @blp.arguments(CreateKeySchema)
    @blp.response(201, CreatedKeyEnvelopeSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, args):
        """Create an API key; its secret is shown only in this answer."""
        tenant = current_tenant()
        rounds = current_app.config["APIKEYS_BCRYPT_ROUNDS"]
        with db.get_engine().begin() as conn:
            created = manage.create_key(conn, tenant, args["name"], args["environment"], rounds)
        return {"data": created}


@blp.route("/dashboard/api-keys/<string:key_id>")
class ApiKeyById(MethodView):
    @blp.doc(security=BEARER, operationId="getApiKey")
    @blp.response(200, KeyEnvelopeSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, key_id):
        """Get one of the tenant's API keys."""
        tenant = _tenant_and_id(key_id)
        with db.get_engine().connect() as conn:
            row = store.get_key(conn, tenant, key_id)
        if row is None:
            _not_found()
        return {"data": row}

    @blp.doc(security=BEARER, operationId="deleteApiKey")
    @blp.response(200, DeletedSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, key_id):
        """Delete an API key for good."""
        tenant = _tenant_and_id(key_id)
        with db.get_engine().begin() as conn:
            deleted = store.delete_key(conn, tenant, key_id)
        if not deleted:
            _not_found()
        return {}


@blp.route("/dashboard/api-keys/<string:key_id>/regenerate")
class ApiKeyRegeneration(MethodView):
    @blp.doc(security=BEARER, operationId="regenerateApiKey")
    @blp.response(200, RegeneratedKeyEnvelopeSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, key_id):
        """Give a key a new secret; the old secret stops working at once."""
        tenant = _tenant_and_id(key_id)
        rounds = current_app.config["APIKEYS_BCRYPT_ROUNDS"]
        try:
            regenerated = manage.regenerate_key(db.get_engine(), tenant, key_id, rounds)
        except manage.KeyNotFound:
            _not_found()
        except manage.KeyChanged:
            abort(
                409,
                message="The key was regenerated by another request at the same moment; this one changed nothing.",
                code="REGENERATED_CONCURRENTLY",
            )
        return {"data": regenerated}


@blp.route("/dashboard/api-keys/<string:key_id>/toggle")
class ApiKeyToggle(MethodView):
    @blp.doc(security=BEARER, operationId="toggleApiKey")
    @blp.response(200, ToggledKeyEnvelopeSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, key_id):
        """Disable an active key, or enable a disabled one."""
        tenant = _tenant_and_id(key_id)
        with db.get_engine().begin() as conn:
            active = store.toggle_key(conn, tenant, key_id)
        if active is None:
            _not_found()
        return {"data": {"id": key_id, "active": active, "message": TOGGLE_MESSAGES[active]}}


class AnyPathConverter(PathConverter):
    """Like ``path``, but also empty and with leading or doubled slashes, as a proxy may forward them."""

    regex = ".*?"
    part_isolating = False  # it spans slashes (werkzeug infers True from a regex without "/")


# /verify is the hot path: its views read the query and write the answer by hand,
# which costs a fraction of webargs and marshmallow; the decorators below only
# document it, and a test checks the answers against the documented schema.
ENVIRONMENT_PARAMETER = {
    "in": "query",
    "name": "environment",
    "required": False,
    "schema": {"type": "string", "enum": list(ENVIRONMENTS)},
    "description": "Require a key of this environment.",
}


def _verified(environment: str | None):
    verified = verify_api_key(request.headers.get(API_KEY_HEADER), environment)
    g.api_key = verified
    response = current_app.json.response(
        {
            "statusCode": 200,
            "data": {
                "valid": True,
                "id": verified.id,
                "tenantId": verified.tenant_id,
                "environment": verified.environment,
                "name": verified.name,
                "publicKey": verified.public_key,
            },
        }
    )
    response.headers["X-Api-Key-Id"] = verified.id
    response.headers["X-Tenant-Id"] = verified.tenant_id
    response.headers["X-Api-Key-Environment"] = verified.environment
    return response


def _documented_verification(view=None, *, query: bool = False):
    """Document a /verify view in OpenAPI, but call it bare: flask-smorest's wrappers cost on the hot path."""

    def decorate(view):
        documented = blp.doc(security=API_KEY)(view)
        documented = blp.alt_response(200, schema=VerifiedKeyEnvelopeSchema, success=True)(documented)
        documented = blp.alt_response(401, response="UNAUTHORIZED")(documented)
        documented = blp.alt_response(403, response="FORBIDDEN")(documented)
        if query:
            documented = blp.doc(parameters=[ENVIRONMENT_PARAMETER])(documented)
            documented = blp.alt_response(400, response="BAD_REQUEST")(documented)
        view._apidoc = documented._apidoc  # what flask-smorest reads to write the document
        return view

    return decorate(view) if view is not None else decorate


@blp.route("/verify")
class Verification(MethodView):
    @_documented_verification(query=True)
    def get(self):
        """Verify the API key in X-Api-Key, of any environment or the one asked for; any method."""
        environment = request.args.get("environment")
        if environment is not None and environment not in ENVIRONMENTS:
            abort(400, errors={"environment": [f"Must be one of: {', '.join(ENVIRONMENTS)}."]})
        return _verified(environment)

    post = put = patch = delete = options = get


# Envoy's ext_authz appends the client's whole request path, query string included,
# to /verify: here the query belongs to the client, so nothing is read from it.
@blp.route("/verify/<anypath:subpath>", merge_slashes=False)
class ProxiedVerification(MethodView):
    @_documented_verification
    def get(self, subpath):
        """Verify the API key in X-Api-Key for a proxy that forwards the original path; any method."""
        return _verified(None)

    post = put = patch = delete = options = get


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(operationId="health")
    @blp.response(200, HealthEnvelopeSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self):
        """Answer 200 when the database answers."""
        try:
            with db.get_engine().connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            abort(503, message="The database does not answer.", code="DATABASE_UNAVAILABLE")
        return {"data": {"status": "ok"}}


def init_app(app) -> None:
    """Register the API, its OpenAPI document and docs, and the error envelope."""
    app.config.setdefault("API_TITLE", "apikeys")
    app.config.setdefault("API_VERSION", "1.0.0")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", "https://cdn.jsdelivr.net/npm/swagger-ui-dist/")
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                }
            }
        },
    )
    app.url_map.converters["anypath"] = AnyPathConverter
    api = ApiKeysApi(app)
    api.register_converter(AnyPathConverter, lambda converter: {"type": "string"})
    api.register_blueprint(blp)
