"""gunicorn's logger for apikeys: access lines with every request-derived atom escaped, and refused requests
logged by what went wrong, never by what they carried."""

from __future__ import annotations

import sys

from gunicorn import glogging
from gunicorn.http import errors

from apikeys.logs import escape

__all__ = ["Logger"]

# gunicorn's own words in workers/base.py handle_error (23 to 27): "Invalid request from ip={ip}: {error}",
# where error is str(exc): the refused request line, header line or method, query string and secrets included.
_REFUSED = "Invalid request from ip="
# handle_error again, for an exception out of the application: "Error handling request %s %s" (method, uri),
# and the uri has the query string.
_APP_ERROR = "Error handling request %s"
# workers/sync.py and base_async.py, at debug level: NoMoreData's text holds the bytes read so far.
_PREMATURE = "Ignored premature client disconnection."

# Atoms that hold a header value or the query string: blanked on a request gunicorn refused.
_QUERY_ATOMS = ("q", "f", "a", "u")


def _refusal() -> BaseException | None:
    """The parse error gunicorn is handling right now, if any: handle_error runs inside the worker's except."""
    error = sys.exc_info()[1]
    if isinstance(error, (errors.ParseException, errors.NoMoreData)):
        return error
    return None


def _describe(error: BaseException | None) -> str:
    """A fixed description of a refusal: the exception's class name, which says what was wrong and holds no input."""
    return type(error).__name__ if error is not None else "a malformed request"


class Logger(glogging.Logger):
    """gunicorn's logger with nothing from a request written raw: set ``logger_class`` to it."""

    def atoms(self, resp, req, environ, request_time):
        """The access-log atoms, each escaped; on a refused request, no header value or query string at all."""
        atoms = super().atoms(resp, req, environ, request_time)
        if _refusal() is not None:
            for name in list(atoms):
                if name in _QUERY_ATOMS or name.endswith("}i") or name.endswith("}e"):
                    atoms[name] = "-"
            atoms["r"] = f"{atoms.get('m') or '-'} {atoms.get('U') or '-'} {atoms.get('H') or '-'}"
        return {name: escape(value) if isinstance(value, str) else value for name, value in atoms.items()}

    def warning(self, msg, *args, **kwargs):
        """gunicorn's warnings, but a refused request is named by its error class and the client's address only."""
        if isinstance(msg, str) and msg.startswith(_REFUSED):
            error = _refusal() or sys.exc_info()[1]
            suffix = f": {error}" if error is not None else None
            ip = msg[len(_REFUSED) : -len(suffix)] if suffix and msg.endswith(suffix) else "?"
            msg, args = "Invalid request from ip=%s: %s (request not logged)", (escape(ip), _describe(error))
        super().warning(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        """gunicorn's tracebacks, with a request's path (escaped) in place of its uri and query string."""
        if isinstance(msg, str) and msg.startswith(_APP_ERROR) and args:
            *rest, uri = args
            path = uri.split("?", 1)[0] if isinstance(uri, str) else "-"
            args = (*(escape(a) if isinstance(a, str) else a for a in rest), escape(path))
        super().exception(msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        """gunicorn's debug lines, without the bytes of a request its client abandoned."""
        if isinstance(msg, str) and msg.startswith(_PREMATURE):
            msg, args = _PREMATURE, ()
        super().debug(msg, *args, **kwargs)
