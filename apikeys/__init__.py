"""apikeys: a self-hosted API-key service, and the helpers to verify its keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from apikeys.errors import VerificationError
    from apikeys.verify import ApiKeys
    from apikeys.verify import VerifiedKey
    from apikeys.verify import require_api_key
    from apikeys.verify import verify_api_key

__all__ = ["ApiKeys", "VerificationError", "VerifiedKey", "create_app", "require_api_key", "verify_api_key"]

_LAZY = {
    "ApiKeys": "apikeys.verify",
    "VerifiedKey": "apikeys.verify",
    "require_api_key": "apikeys.verify",
    "verify_api_key": "apikeys.verify",
    "VerificationError": "apikeys.errors",
}


def __getattr__(name: str):
    # Imported on first use, so that importing the pytest plugin (apikeys.testing)
    # costs other projects' test runs nothing until they use a fixture.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'apikeys' has no attribute {name!r}")


def create_app(test_config: dict | None = None, instance_path: str | None = None) -> Flask:
    """Create the apikeys service: configuration, database, verification, API, metrics and commands."""
    from flask import Flask

    from apikeys import api
    from apikeys import cli
    from apikeys import config
    from apikeys import console
    from apikeys import cors
    from apikeys import errors
    from apikeys import fast_path
    from apikeys import instance
    from apikeys import logs
    from apikeys import metrics
    from apikeys import tokens
    from apikeys.verify import ApiKeys
    from apikeys.verify import ensure_verifier_key

    app = Flask(__name__, instance_relative_config=True, instance_path=config.instance_path(instance_path))
    app.json.sort_keys = False  # answer fields in the documented order
    config.init_app(app, test_config)
    instance.make_private_folder(app.instance_path)
    logs.init_app(app)
    errors.init_app(app)
    tokens.init_app(app)
    ensure_verifier_key(app)  # the service makes its own on first start; an app that only verifies never does
    ApiKeys(app)
    api.init_app(app)
    metrics.init_app(app)
    cors.init_app(app)
    console.init_app(app)
    cli.init_app(app)
    fast_path.init_app(app)  # last: it wraps the finished app's WSGI callable
    return app
