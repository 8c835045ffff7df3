"""Logging: the app's logger, and one line per request that never holds a secret."""

from __future__ import annotations

import json
import logging
import sys
import time

from flask import current_app
from flask import g
from flask import request

log = logging.getLogger("apikeys.requests")


def escape(value: str) -> str:
    """Make a request-derived string safe for one log line: backslash and every non-printable character escaped.

    CR and LF would start a forged line, ESC drives the terminal that shows the
    log, U+2028/U+2029 are line breaks to many readers, and bidi overrides
    reorder what a reader sees. ``str.isprintable`` is False for all of them
    (and for every other control, format or separator character but the space);
    backslash is escaped too, so an escape in the log always means one was made.
    """
    if value.isprintable() and "\\" not in value:
        return value  # the common case, checked in C
    return "".join(_escape_character(c) for c in value)


def _escape_character(character: str) -> str:
    if character == "\\":
        return "\\\\"
    if character.isprintable():
        return character
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# Attributes every LogRecord has; anything else on a record was passed in `extra`.
_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message and any extra fields."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ensure_ascii: every control, line separator and bidi character becomes a \\u escape.
        return json.dumps(entry, default=str, ensure_ascii=True)


class _Handler(logging.StreamHandler):
    """Our handler, told apart so a second create_app does not add another.

    It writes to whatever sys.stderr is at the time, so a test runner that
    swaps stderr never leaves it writing to a closed stream.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _before_request():
    g.request_started = time.perf_counter()


def _after_request(response):
    if not log.isEnabledFor(logging.INFO):
        return response
    state = g._get_current_object()  # one proxy lookup instead of several: this runs on every request
    started = getattr(state, "request_started", None)
    api_key = getattr(state, "api_key", None)
    if api_key is not None and response.status_code == 200 and not current_app.config["APIKEYS_LOG_VERIFIED"]:
        # A successful verification is the hot path, and the proxy in front logs the request anyway;
        # refusals, and every dashboard request, are always logged.
        return response
    tenant = getattr(state, "tenant", None) or (api_key.tenant_id if api_key else None)
    key_id = api_key.id if api_key else None
    duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
    log_request(request.method, request.path, response.status_code, duration_ms, tenant, key_id)
    return response


def log_request(method: str, path: str, status: int, duration_ms, tenant: str | None, key_id: str | None) -> None:
    """Write one request's log line; ``path`` without the query string, which is the client's to fill."""
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "tenant": tenant,
        "key_id": key_id,
    }
    # The fields keep their values for the JSON formatter (which escapes by construction); the text line gets
    # every value that came from a request, or from a tenant someone typed, escaped.
    log.info(
        "%s %s %s %sms tenant=%s key=%s",
        escape(method),
        escape(path),
        status,
        duration_ms,
        escape(tenant) if tenant else "-",
        escape(key_id) if key_id else "-",
        extra=fields,
    )


def init_app(app) -> None:
    """Set up the apikeys loggers and the request log."""
    logger = logging.getLogger("apikeys")
    logger.setLevel(app.config["APIKEYS_LOG_LEVEL"])
    if not any(isinstance(h, _Handler) for h in logger.handlers):
        handler = _Handler()
        logger.addHandler(handler)
    else:
        handler = next(h for h in logger.handlers if isinstance(h, _Handler))
    if app.config["APIKEYS_LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    app.before_request(_before_request)
    app.after_request(_after_request)
