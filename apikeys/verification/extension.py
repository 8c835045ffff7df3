"""The Flask extension: ApiKeys and its per-app state, the helper verify_api_key and the decorator require_api_key."""

from __future__ import annotations

import functools

from flask import after_this_request
from flask import current_app
from flask import g
from flask import has_app_context
from flask import request

from apikeys import config as config_module
from apikeys import envelope
from apikeys import errors
from apikeys import scopes as scopes_module
from apikeys.limits import MAX_COST
from apikeys.verification import headers
from apikeys.verification.core import VerifiedKey
from apikeys.verification.core import verify_key
from apikeys.verification.state import State


class ApiKeys:
    """The Flask extension that verifies API keys against the apikeys database."""

    def __init__(self, app=None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        """Check the app's apikeys settings and set up its engine, verifier key and error envelope."""
        if "apikeys" in app.extensions:
            raise RuntimeError("ApiKeys is already set up on this app; call init_app once.")
        config_module.check(app.config)
        app.extensions["apikeys"] = State(app.config, app.instance_path)
        app.register_error_handler(errors.ApiKeysError, envelope.handle_error)


def get_state(app=None) -> State:
    """Return the apikeys state of ``app`` (the current app by default)."""
    if app is None:
        if not has_app_context():
            raise RuntimeError(
                "apikeys needs an application context: call it inside a request, or in `with app.app_context():`."
            )
        app = current_app
    try:
        return app.extensions["apikeys"]
    except KeyError:
        raise RuntimeError("apikeys is not set up on this app: call ApiKeys(app) or ApiKeys().init_app(app).") from None


def get_engine(app=None):
    """Return the app's engine (the current app's by default)."""
    return get_state(app).engine


def verify_api_key(full_key: str | None, environment: str | None = None, scopes=None, cost: int = 1) -> VerifiedKey:
    """Verify a full key with the current app's ApiKeys; raise VerificationError.

    ``scopes``: the scopes the key must grant, a list or one string of them separated by spaces or commas.
    ``cost``: what the call takes from the key's quota (0 to 1,000; 0 only checks); the result's ``usage``
    tells what is left of its rate limit and quota.
    """
    return verify_key(get_state(), full_key, environment, _required(scopes), _cost(cost))


def require_api_key(environment=None, *, scopes=None, cost: int = 1):
    """Decorate a view to run only for a valid key (X-Api-Key or Authorization: Bearer); it is on ``g.api_key``.

    The answer carries the key's RateLimit-* and X-Api-Key-Quota-Remaining headers, where it has limits.
    """
    required = _required(scopes)  # a scope outside the grammar fails here, at import, not on a request
    cost = _cost(cost)

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            presented = headers.presented_key(
                request.headers.get(headers.API_KEY), request.headers.get(headers.AUTHORIZATION)
            )
            g.api_key = verify_key(get_state(), presented, environment, required, cost)
            if g.api_key.usage is not None:
                after_this_request(_add_usage_headers)
            return view(*args, **kwargs)

        return wrapper

    if callable(environment):  # used bare: @require_api_key
        view, environment = environment, None
        return decorator(view)
    return decorator


def _add_usage_headers(response):
    response.headers.update(g.api_key.usage.headers())
    return response


def _cost(cost) -> int:
    """Return a cost, checked: a whole number from 0 to MAX_COST; raise ValueError."""
    if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= MAX_COST:
        raise ValueError(f"Not a cost: {cost!r}; a cost is a whole number from 0 to {MAX_COST}.")
    return cost


def _required(scopes) -> tuple[str, ...]:
    """Return the required scopes as a tuple; raise ValueError for one outside the scope grammar."""
    if not scopes:
        return ()
    if isinstance(scopes, str):
        return tuple(scopes_module.parse_required(scopes))
    invalid = [scope for scope in scopes if not scopes_module.is_valid(scope)]
    if invalid:
        raise ValueError(f"Not a scope: {invalid[0]!r}; a scope is 1 to 64 of A-Z a-z 0-9 _ . : * -.")
    return tuple(scopes)


def prepare(app) -> None:
    """Get the app's database ready to serve: create or upgrade the schema, then record or check the verifier key."""
    from apikeys.storage import migrate  # Alembic loads only for this, not in every app that verifies

    state = get_state(app)
    migrate.prepare(state.engine, state.verifier.fingerprint, state.fingerprints)
