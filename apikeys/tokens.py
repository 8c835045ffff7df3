"""JWTs: the tenant of a dashboard request, the signing secret, and tokens for the CLI."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
import unicodedata

import jwt
from flask import current_app
from flask import g
from flask import request
from flask_smorest import abort

log = logging.getLogger(__name__)

SECRET_FILE = "jwt-secret"
MAX_TENANT_LENGTH = 255
MIN_SECRET_LENGTH = 32


def load_or_create_secret(instance_path: str) -> str:
    """Return the signing secret kept in the instance folder, creating it (mode 0600) on first use."""
    path = os.path.join(instance_path, SECRET_FILE)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    os.makedirs(instance_path, exist_ok=True)
    # Write to a private temporary file, then link it into place: when several
    # workers start at once, exactly one link wins and the others read its secret.
    descriptor, temporary = tempfile.mkstemp(dir=instance_path, prefix=".jwt-secret-")
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())  # never link an empty file into place
        os.link(temporary, path)
        log.warning("Generated a JWT signing secret and stored it in %s (mode 0600).", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return _read_secret(path)


def _read_secret(path: str) -> str:
    if os.stat(path).st_mode & 0o077:
        log.warning("%s can be read by other users; make it mode 0600.", path)
    with open(path, encoding="ascii") as file:
        secret = file.read().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise RuntimeError(f"{path} holds no usable secret (under {MIN_SECRET_LENGTH} characters); delete it.")
    return secret


def init_app(app) -> None:
    """Check the JWT settings at start, and make sure HS* algorithms have a signing secret."""
    config = app.config
    algorithms = config["APIKEYS_JWT_ALGORITHMS"]
    known = jwt.algorithms.get_default_algorithms()
    unusable = [a for a in algorithms if a not in known or a == "none"]
    if not algorithms or unusable:
        raise RuntimeError(f"APIKEYS_JWT_ALGORITHMS has no usable algorithm or unknown ones: {unusable or algorithms}")
    if any(a.startswith("HS") for a in algorithms) and not config["APIKEYS_JWT_SECRET"]:
        config["APIKEYS_JWT_SECRET"] = load_or_create_secret(app.instance_path)
    asymmetric = [a for a in algorithms if not a.startswith("HS")]
    if asymmetric and not config["APIKEYS_JWT_PUBLIC_KEY"]:
        raise RuntimeError(f"APIKEYS_JWT_PUBLIC_KEY is needed for {', '.join(asymmetric)}.")
    if asymmetric and not (config["APIKEYS_JWT_AUDIENCE"] or config["APIKEYS_JWT_ISSUER"]):
        # A public key often belongs to an identity provider that signs tokens for other services too.
        log.warning("No APIKEYS_JWT_AUDIENCE or APIKEYS_JWT_ISSUER: any token the key signs will be accepted.")


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
    except jwt.PyJWTError:  # InvalidKeyError (a key of the wrong type) is not an InvalidTokenError
        _unauthorized("The bearer token is not valid.")
    tenant = claims.get(current_app.config["APIKEYS_JWT_TENANT_CLAIM"])
    if not valid_tenant(tenant):
        _unauthorized("The bearer token names no tenant.")
    g.tenant = tenant
    return tenant


def valid_tenant(tenant) -> bool:
    """Tell whether a tenant name can be stored: a string of 1 to 255 characters, no control characters."""
    return (
        isinstance(tenant, str)
        and 0 < len(tenant) <= MAX_TENANT_LENGTH
        and not any(unicodedata.category(char) in ("Cc", "Cs") for char in tenant)
    )


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
