"""gunicorn picks this file up from the working directory: `gunicorn app:app` and `make run`."""

from apikeys.gunicorn_conf import *  # noqa: F401,F403
