"""Serving apikeys: gunicorn's settings, hooks and logger, and `apikeys serve`."""
