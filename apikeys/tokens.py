"""JWTs: the tenant of a dashboard request, the signing secret, and tokens for the CLI."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time

import jwt
from flask import current_app
from flask import g
from flask import request
from flask_smorest import abort

log = logging.getLogger(__name__)

SECRET_FILE = "jwt-secret"
MAX_TENANT_LENGTH = 255


def load_or_create_secret(instance_path: str) -> str:
    """Return the signing secret kept in the instance folder, creating it (mode 0600) on first use."""
    path = os.path.join(instance_path, SECRET_FILE)
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(instance_path, exist_ok=True)
    # Write to a private temporary file, then link it into place: when several
    # workers start at once, exactly one link wins and the others read its secret.
    descriptor, temporary = tempfile.mkstemp(dir=instance_path, prefix=".jwt-secret-")
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        os.link(temporary, path)
        log.warning("Generated a JWT signing secret and stored it in %s (mode 0600).", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    with open(path, encoding="ascii") as file:
        return file.read().strip()


def init_app(app) -> None:
    """Make sure the app has a signing secret for HS* algorithms."""
    wants_secret = any(a.startswith("HS") for a in app.config["APIKEYS_JWT_ALGORITHMS"])
    if wants_secret and not app.config["APIKEYS_JWT_SECRET"]:
        app.config["APIKEYS_JWT_SECRET"] = load_or_create_secret(app.instance_path)


def _key_for(algorithm: str, config) -> str | None:
    # The key follows from the algorithm *we* allow, never from the token alone:
    # HMAC algorithms use the shared secret, all others the public key. A public
    # key is never used as an HMAC secret (the classic key-confusion attack).
    if algorithm.startswith("HS"):
        return config["APIKEYS_JWT_SECRET"] or None
    return config["APIKEYS_JWT_PUBLIC_KEY"] or None


def decode_token(token: str, config) -> dict:
    """Check a JWT against the configuration and return its claims; raise jwt.InvalidTokenError."""
    allowed = config["APIKEYS_JWT_ALGORITHMS"]
    algorithm = jwt.get_unverified_header(token).get("alg")
    if algorithm not in allowed:
        raise jwt.InvalidAlgorithmError("The token's algorithm is not allowed.")
    key = _key_for(algorithm, config)
    if key is None:
        raise jwt.InvalidKeyError("No key is configured for the token's algorithm.")
    return jwt.decode(
        token,
        key,
        algorithms=[algorithm],
        audience=config["APIKEYS_JWT_AUDIENCE"] or None,
        issuer=config["APIKEYS_JWT_ISSUER"] or None,
        leeway=config["APIKEYS_JWT_LEEWAY"],
        options={"require": ["exp"], "verify_aud": bool(config["APIKEYS_JWT_AUDIENCE"])},
    )


def _unauthorized(message: str):
    abort(401, message=message, code="INVALID_TOKEN", headers={"WWW-Authenticate": 'Bearer realm="apikeys"'})


def current_tenant() -> str:
    """Return the tenant named by the request's bearer token, or answer 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _unauthorized("A bearer token is required in the Authorization header.")
    try:
        claims = decode_token(token.strip(), current_app.config)
    except jwt.InvalidTokenError:
        _unauthorized("The bearer token is not valid.")
    tenant = claims.get(current_app.config["APIKEYS_JWT_TENANT_CLAIM"])
    if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_LENGTH:
        _unauthorized("The bearer token names no tenant.")
    g.tenant = tenant
    return tenant


def issue_token(config, tenant: str, ttl: int, **claims) -> str:
    """Sign a token for ``tenant`` with the configured shared secret."""
    algorithm = next((a for a in config["APIKEYS_JWT_ALGORITHMS"] if a.startswith("HS")), None)
    if algorithm is None or not config["APIKEYS_JWT_SECRET"]:
        raise RuntimeError("Tokens can only be issued with an HS* algorithm and APIKEYS_JWT_SECRET.")
    now = int(time.time())
    payload = {config["APIKEYS_JWT_TENANT_CLAIM"]: tenant, "iat": now, "exp": now + ttl}
    if config["APIKEYS_JWT_AUDIENCE"]:
        payload["aud"] = config["APIKEYS_JWT_AUDIENCE"]
    if config["APIKEYS_JWT_ISSUER"]:
        payload["iss"] = config["APIKEYS_JWT_ISSUER"]
    payload.update(claims)
    return jwt.encode(payload, config["APIKEYS_JWT_SECRET"], algorithm=algorithm)
