"""gunicorn picks this file up from the working directory: `gunicorn app:app` and `make run`."""

from apikeys.server.gunicorn_conf import *  # noqa: F401,F403
