"""apikeys: a self-hosted API-key service, and the helpers to verify its keys."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from apikeys.verify import ApiKeys
    from apikeys.verify import VerificationError
    from apikeys.verify import VerifiedKey
    from apikeys.verify import require_api_key
    from apikeys.verify import verify_api_key

__all__ = ["ApiKeys", "VerificationError", "VerifiedKey", "create_app", "require_api_key", "verify_api_key"]

_FROM_VERIFY = {"ApiKeys", "VerificationError", "VerifiedKey", "require_api_key", "verify_api_key"}


def __getattr__(name: str):
    # Imported on first use, so that importing the pytest plugin (apikeys.testing)
    # costs other projects' test runs nothing until they use a fixture.
    if name in _FROM_VERIFY:
        from apikeys import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'apikeys' has no attribute {name!r}")


def create_app(test_config: dict | None = None, instance_path: str | None = None) -> Flask:
    """Create the apikeys service: configuration, database, verification, API and commands."""
    from flask import Flask

    from apikeys import api
    from apikeys import cli
    from apikeys import config
    from apikeys import console
    from apikeys import logs
    from apikeys import tokens
    from apikeys.verify import ApiKeys

    app = Flask(__name__, instance_relative_config=True, instance_path=_instance_path(instance_path))
    app.json.sort_keys = False  # answer fields in the documented order
    config.init_app(app, test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    logs.init_app(app)
    tokens.init_app(app)
    ApiKeys(app)
    api.init_app(app)
    console.init_app(app)
    cli.init_app(app)
    return app


def _instance_path(path: str | None) -> str | None:
    # Flask wants an absolute path; None keeps Flask's default (./instance beside the package).
    path = path or os.environ.get("APIKEYS_INSTANCE_PATH")
    return os.path.abspath(path) if path else None
