"""The app factory: the apikeys service, its modules wired in one by one with their init_app."""

from __future__ import annotations

from flask import Flask

from apikeys import api
from apikeys import config
from apikeys import console
from apikeys import cors
from apikeys import envelope
from apikeys import instance
from apikeys import logs
from apikeys import metrics
from apikeys import tokens
from apikeys.cli import commands
from apikeys.verification import http
from apikeys.verification.extension import ApiKeys
from apikeys.verification.state import ensure_verifier_key


def create_app(test_config: dict | None = None, instance_path: str | None = None) -> Flask:
    """Create the apikeys service: configuration, database, verification, API, metrics and commands."""
    # Named "apikeys", as its logger is; the console serves its own files (no app-wide /static).
    app = Flask(
        "apikeys", instance_relative_config=True, instance_path=config.instance_path(instance_path), static_folder=None
    )
    app.json.sort_keys = False  # answer fields in the documented order
    config.init_app(app, test_config)
    instance.make_private_folder(app.instance_path)
    logs.init_app(app)
    envelope.init_app(app)
    tokens.init_app(app)
    ensure_verifier_key(app)  # the service makes its own on first start; an app that only verifies never does
    ApiKeys(app)
    api.init_app(app)
    metrics.init_app(app)
    cors.init_app(app)
    console.init_app(app)
    commands.init_app(app)
    http.init_app(app)  # last: it wraps the finished app's WSGI callable
    return app
