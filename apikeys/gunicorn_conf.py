"""gunicorn settings and start-up hooks for apikeys (used by `make run` and `apikeys serve`)."""

from __future__ import annotations

import multiprocessing
import os
import shlex

__all__ = [
    "access_log_format",
    "bind",
    "control_socket",
    "control_socket_disable",
    "errorlog",
    "limit_request_field_size",
    "logger_class",
    "on_starting",
    "when_ready",
    "workers",
]

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
# An X-Api-Key of up to 8 KiB must reach the app, where it gets a proper 401.
limit_request_field_size = 16 * 1024
errorlog = "-"
# gunicorn's default access line has the query string (%(r)s) and the Referer,
# where a careless client may put a token; log the path alone (%(U)s).
access_log_format = '%(h)s - - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s "%(a)s" %(L)ss'
# Every atom that came from a request is escaped (a %0A in the path cannot start a forged line), and a request
# gunicorn refuses is logged by its error class, never by the header line or query string it quotes.
logger_class = "apikeys.gunicorn_logging.Logger"
# gunicorn 25+ opens a control socket at one path per user ($XDG_RUNTIME_DIR or $HOME/.gunicorn/gunicorn.ctl):
# a second instance takes it over and removes it when it stops. None unless the operator names one.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or None
control_socket_disable = not control_socket


def on_starting(server):
    """Create or upgrade the database once, in the master, before any worker serves."""
    from apikeys import create_app
    from apikeys import db

    app = create_app()
    engine = db.get_engine(app)
    db.upgrade(engine)
    seed = os.environ.get("APIKEYS_SEED")
    if seed:
        from apikeys.cli import import_file

        with app.app_context(), open(seed, encoding="utf-8") as file:
            created, unchanged = import_file(file)
        server.log.info("Seeded %d keys from %s (%d already there).", created, seed, unchanged)
    engine.dispose()  # workers open their own connections after the fork
    server.apikeys_app = app


def when_ready(server):
    """Tell the person who started us where the API is and how to call it."""
    app = server.apikeys_app
    base = "http://" + server.cfg.bind[0]
    lines = [
        "",
        f"apikeys is serving on {base}",
        f"  API docs:      {base}/docs   (OpenAPI: {base}/openapi.json)",
        "  Get a token:   .venv/bin/apikeys token --tenant acme",
    ]
    if os.environ.get("APIKEYS_DEV"):
        from apikeys.tokens import issue_token

        # Development only: the person at this terminal asked for a ready token.
        token = issue_token(app.config, "dev", 24 * 3600)
        body = '{"name": "My first key", "environment": "test"}'
        lines += [
            "  Token for tenant 'dev' (valid 24 h):",
            f"    {token}",
            "  Create a key:",
            f"    curl -X POST {base}/dashboard/api-keys -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
        ]
    print("\n".join(lines) + "\n", flush=True)
