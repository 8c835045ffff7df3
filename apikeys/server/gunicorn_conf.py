"""gunicorn settings and start-up hooks for apikeys (used by `make run` and `apikeys serve`)."""

from __future__ import annotations

import multiprocessing
import os
import shlex
import sys

__all__ = [
    "access_log_format",
    "bind",
    "child_exit",
    "control_socket",
    "control_socket_disable",
    "errorlog",
    "limit_request_field_size",
    "logger_class",
    "on_exit",
    "on_starting",
    "post_worker_init",
    "when_ready",
    "worker_exit",
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
logger_class = "apikeys.server.gunicorn_logging.Logger"
# gunicorn 25+ opens a control socket at one path per user ($XDG_RUNTIME_DIR or $HOME/.gunicorn/gunicorn.ctl):
# a second instance takes it over and removes it when it stops. None unless the operator names one.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or None
control_socket_disable = not control_socket


def on_starting(server):
    """Check the settings and get the database ready once, in the master, before any worker serves."""
    import tempfile

    import sqlalchemy as sa

    from apikeys import create_app
    from apikeys.config import ConfigError
    from apikeys.dashboard import importing
    from apikeys.errors import ApiKeysError
    from apikeys.storage import engine as engine_module
    from apikeys.verification import extension

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers add up their metrics in files here (prometheus-client's multiprocess mode).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="apikeys-metrics-")
        server.apikeys_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    app = None
    try:
        app = create_app()
        extension.prepare(app)
        seed = os.environ.get("APIKEYS_SEED")
        if seed:
            with open(seed, encoding="utf-8") as file:
                entries = importing.read_import_file(file.read(), seed)
            created, unchanged = importing.import_keys(app.extensions["apikeys"], entries)
            seeded = "1 key" if created == 1 else f"{created} keys"
            server.log.info("Seeded %s from %s (%d already there).", seeded, seed, unchanged)
    except (ConfigError, ApiKeysError, RuntimeError, OSError) as error:
        sys.exit(f"apikeys cannot start: {error}")  # one line, not a traceback
    except sa.exc.DBAPIError as error:  # a database that is missing, silent, or refuses this role
        url = app and engine_module.database_url(app.config, app.instance_path)
        message = url and engine_module.explain_error(error, url)
        if not message:  # a fault of ours keeps its traceback
            raise
        sys.exit(f"apikeys cannot start: {message}")
    from apikeys.ratelimit import stores

    server.log.info(stores.describe(app.config, app.instance_path))
    extension.get_engine(app).dispose()  # workers open their own connections after the fork
    server.apikeys_app = app


def post_worker_init(worker):
    """Refuse to serve if, since the master started, the database adopted a verifier key this host does not have."""
    import sqlalchemy as sa

    from apikeys.storage import fingerprints

    state = getattr(worker.wsgi, "extensions", {}).get("apikeys")
    if state is None:
        return
    try:
        fingerprints.check_recorded_verifier_key(state.engine, state.fingerprints)
    except fingerprints.VerifierKeyMismatch as error:
        worker.log.error("apikeys cannot start: %s", error)
        sys.exit(3)  # gunicorn's "worker failed to boot": the master stops rather than serve with a stale key
    except sa.exc.SQLAlchemyError:
        pass  # a database that does not answer now is /healthz's to report, not a reason to stop the host


def worker_exit(server, worker):
    """Write the worker's usage counts before it goes (a graceful stop, a restart, max_requests)."""
    state = getattr(worker.wsgi, "extensions", {}).get("apikeys")
    if state is not None and state.usage is not None:
        state.usage.stop()


def child_exit(server, worker):
    """Let prometheus-client forget a worker that exited (its counters stay in the totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this master made."""
    import shutil

    folder = getattr(server, "apikeys_metrics_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def when_ready(server):
    """Tell the person who started us where the API is, where the data lives and how to call it."""
    from apikeys.storage import engine as engine_module

    app = server.apikeys_app
    base = "http://" + server.cfg.bind[0]
    database = sa_url(engine_module.database_url(app.config, app.instance_path))
    lines = [
        "",
        f"apikeys is serving on {base}",
        f"  API docs:      {base}/docs   (OpenAPI: {base}/openapi.json)",
        f"  Console:       {base}/console",
        f"  Data:          {database}   (instance folder: {app.instance_path})",
        "  Get a token:   .venv/bin/apikeys token --tenant dev",
    ]
    if os.environ.get("APIKEYS_DEV"):
        from apikeys.tokens import issue_token

        # Development only: the person at this terminal asked for a ready token. The console
        # link carries it in the fragment (#), which browsers never send to the server.
        token = issue_token(app.config, "dev", 24 * 3600)
        body = '{"name": "My first key", "environment": "test"}'
        lines += [
            "  Token for tenant 'dev' (valid 24 h):",
            f"    {token}",
            f"  Console, signed in as 'dev':  {base}/console#token={token}",
            "  Create a key:",
            f"    curl -X POST {base}/dashboard/api-keys -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
        ]
    print("\n".join(lines) + "\n", flush=True)


def sa_url(url: str) -> str:
    """Return a database URL without its password."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)
