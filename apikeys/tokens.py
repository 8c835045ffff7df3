"""JWTs: the ``authenticate`` decorator that names a request's tenant, the signing secret, and tokens for the CLI."""

from __future__ import annotations

import functools
import logging
import re
import time

import jwt
from flask import current_app
from flask import g
from flask import request

from apikeys import instance
from apikeys import tenants
from apikeys.config import ConfigError
from apikeys.errors import InvalidToken

log = logging.getLogger(__name__)

SECRET_FILE = "jwt-secret"


def init_app(app) -> None:
    """Check the JWT settings together (each alone is checked by apikeys.config), and give HS* a signing secret."""
    config = app.config
    algorithms = config["APIKEYS_JWT_ALGORITHMS"]
    known = jwt.algorithms.get_default_algorithms()
    unusable = [a for a in algorithms if a not in known or a == "none"]
    if not algorithms or unusable:
        raise ConfigError(f"APIKEYS_JWT_ALGORITHMS has no usable algorithm or unknown ones: {unusable or algorithms}")
    if any(a.startswith("HS") for a in algorithms) and not config["APIKEYS_JWT_SECRET"]:
        config["APIKEYS_JWT_SECRET"] = instance.load_or_create_secret(
            app.instance_path, SECRET_FILE, "JWT signing secret"
        )
    elif any(a.startswith("HS") for a in algorithms) and len(config["APIKEYS_JWT_SECRET"]) < instance.MIN_SECRET_LENGTH:
        # A short shared secret can be guessed offline from any one token it signed.
        raise ConfigError(f"APIKEYS_JWT_SECRET must be at least {instance.MIN_SECRET_LENGTH} characters.")
    asymmetric = [a for a in algorithms if not a.startswith("HS")]
    if asymmetric and not config["APIKEYS_JWT_PUBLIC_KEY"]:
        raise ConfigError(f"APIKEYS_JWT_PUBLIC_KEY is needed for {', '.join(asymmetric)}.")
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


# What each failed check is called in the 401's message: never the token or a key.
_REASONS = [
    (jwt.ExpiredSignatureError, "The bearer token has expired."),
    (jwt.ImmatureSignatureError, "The bearer token is not valid yet (nbf or iat is in the future)."),
    (jwt.InvalidSignatureError, "The bearer token's signature does not match."),
    (jwt.InvalidAudienceError, "The bearer token is not for this audience (aud)."),
    (jwt.InvalidIssuerError, "The bearer token is not from the expected issuer (iss)."),
    (jwt.InvalidAlgorithmError, "The bearer token's algorithm is not allowed."),
    (jwt.exceptions.InvalidSubjectError, "The bearer token's sub claim must be a string."),
    (jwt.DecodeError, "The bearer token is not a well-formed JWT."),
]
# pyjwt says a time claim is not a number as a DecodeError ("... claim (exp) must be an integer.").
_TIME_CLAIM_TYPE = re.compile(r"\((exp|nbf|iat)\) must be an integer")


def _reason(error: jwt.PyJWTError) -> str:
    time_claim = _TIME_CLAIM_TYPE.search(str(error))
    if time_claim:
        return f"The bearer token's {time_claim[1]} claim must be a number (seconds since 1970)."
    return next((text for kind, text in _REASONS if isinstance(error, kind)), "The bearer token is not valid.")


def _check_time_claims(claims: dict) -> None:
    # A NumericDate is a JSON number (RFC 7519). pyjwt only checks that int(value) works, so "1900000000" and
    # true get through, and a string exp would break the comparisons below. Refuse them as pyjwt refuses "soon".
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidToken(f"The bearer token's {name} claim must be a number (seconds since 1970).")


def decode_token(token: str, config) -> dict:
    """Check a JWT against the configuration and return its claims; raise InvalidToken saying which check failed."""
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm not in config["APIKEYS_JWT_ALGORITHMS"]:
            raise jwt.InvalidAlgorithmError
        key = _key_for(algorithm, config)
        if key is None:
            raise InvalidToken("No key is configured for the bearer token's algorithm.")
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=config["APIKEYS_JWT_AUDIENCE"] or None,
            issuer=config["APIKEYS_JWT_ISSUER"] or None,
            leeway=config["APIKEYS_JWT_LEEWAY"],
            options={"require": ["exp"], "verify_aud": bool(config["APIKEYS_JWT_AUDIENCE"])},
        )
    except jwt.MissingRequiredClaimError as error:
        raise InvalidToken(f"The bearer token has no {error.claim} claim.") from None
    except jwt.PyJWTError as error:  # InvalidKeyError (a key of the wrong type) is not an InvalidTokenError
        raise InvalidToken(_reason(error)) from None
    _check_time_claims(claims)
    now = time.time()
    # The leeway forgives a clock a little ahead (nbf, iat); an expired token stays expired.
    if claims["exp"] <= now:
        raise InvalidToken("The bearer token has expired.")
    max_lifetime = config["APIKEYS_JWT_MAX_LIFETIME"]
    if max_lifetime and claims["exp"] > now + max_lifetime + config["APIKEYS_JWT_LEEWAY"]:
        raise InvalidToken(f"The bearer token lives too long: it may expire at most {max_lifetime} s from now.")
    return claims


def tenant_of(claims: dict, config) -> tuple[str, str | None]:
    """Return the tenant and the actor (the ``sub`` claim, or None) of checked claims; raise InvalidToken."""
    claim = config["APIKEYS_JWT_TENANT_CLAIM"]
    tenant = claims.get(claim)
    if tenant is None:
        raise InvalidToken(f"The bearer token has no {claim} claim naming the tenant.")
    if not tenants.is_valid(tenant):
        raise InvalidToken(f"The bearer token's {claim} claim is not a valid tenant: {tenants.RULE}.")
    actor = claims.get("sub")
    if actor is not None and not tenants.is_valid(actor):
        raise InvalidToken(f"The bearer token's sub claim must be {tenants.RULE}.")
    return tenant, actor


def authenticate(view):
    """Run ``view`` only for a request with a valid bearer token; put its tenant and actor on ``g``."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken()
        config = current_app.config
        g.tenant, g.actor = tenant_of(decode_token(token.strip(), config), config)
        return view(*args, **kwargs)

    return wrapper


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
