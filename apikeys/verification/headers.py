"""The header names of verification, written once: what a client presents, what a proxy asks, what /verify answers."""

from __future__ import annotations

import re

from apikeys import errors

API_KEY = "X-Api-Key"
# Where Stripe, OpenAI and Unkey clients put a key: `Authorization: Bearer <full key>` is read as well.
AUTHORIZATION = "Authorization"
# Set by the proxy, per route; never the client's (every shipped proxy file overwrites or removes them).
REQUIRED_SCOPES = "X-Api-Key-Required-Scopes"
# /verify's answer, which the proxy copies onto the request it forwards.
KEY_ID = "X-Api-Key-Id"
TENANT_ID = "X-Tenant-Id"
ENVIRONMENT = "X-Api-Key-Environment"
SCOPES = "X-Api-Key-Scopes"
# On a refusal, its code (INSUFFICIENT_SCOPE, ...) and its message as written inside the body's JSON string
# (ASCII, quotes escaped): nginx's auth_request drops /verify's body but can rebuild it from these two.
ERROR_CODE = "X-Api-Key-Error"
ERROR_MESSAGE = "X-Api-Key-Error-Message"
# What a request costs against the key's quota: the proxy's to set per route, like REQUIRED_SCOPES.
COST = "X-Api-Key-Cost"
# A limited key's state after this request (IETF draft-ietf-httpapi-ratelimit-headers names), on 200 and 429.
RATE_LIMIT_LIMIT = "RateLimit-Limit"
RATE_LIMIT_REMAINING = "RateLimit-Remaining"
RATE_LIMIT_RESET = "RateLimit-Reset"
QUOTA_REMAINING = "X-Api-Key-Quota-Remaining"

# A JWT (three base64url parts), such as the dashboard's token: never one of our keys, which have two parts.
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """Return the key a request presents in X-Api-Key or `Authorization: Bearer`; raise VerificationError.

    Another scheme (Basic, ...) is not an API key and is ignored; so is a JWT next to an
    X-Api-Key (the application's own token). Two different keys are refused, never one picked.
    """
    if not authorization:
        return api_key
    scheme, _, credential = authorization.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return api_key
    credential = credential.strip(" \t")
    jwt = _JWT.fullmatch(credential) is not None
    if api_key:
        if credential and not jwt and credential != api_key.strip(" \t"):
            raise errors.AmbiguousApiKey()
        return api_key
    if jwt:
        raise errors.NotAnApiKey()
    return credential or api_key
