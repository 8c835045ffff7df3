"""/verify straight from the WSGI environ, before Flask: the same answers as apikeys.forward_auth's views, for less.

A proxy calls /verify once per request it forwards, so Flask's per-request work
(the request context, URL routing, before/after hooks, MethodView dispatch, a
werkzeug Response) is most of what a verification costs once the key check
itself is one read and one HMAC. Nothing is kept between requests: every
verification still reads the key's row, so a revocation holds from its
acknowledgement. The Flask views stay, documented and served when this
wrapper is not installed; anything unusual is left to them.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from apikeys import errors
from apikeys import logs
from apikeys import metrics
from apikeys.forward_auth import identity_answer
from apikeys.forward_auth import required_scopes
from apikeys.keys import ENVIRONMENTS
from apikeys.verify import verify_key

_KEY = "HTTP_X_API_KEY"
_SCOPES = "HTTP_X_API_KEY_REQUIRED_SCOPES"


class _Refer(Exception):
    """This request is Flask's to answer (an invalid query, say): nothing has been done for it yet."""


class VerifyFastPath:
    """WSGI middleware that answers /verify and /verify/<anything> itself and passes every other request on."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self.state = app.extensions["apikeys"]
        self.log_verified = app.config["APIKEYS_LOG_VERIFIED"]

    def __call__(self, environ, start_response):
        """Answer a verification, or call the wrapped app."""
        raw_path = environ.get("PATH_INFO") or ""
        # Routed as werkzeug routes it: leading slashes collapse to one.
        path = "/" + raw_path.lstrip("/") if raw_path.startswith("//") else raw_path
        if path == "/verify":
            from_query = True
        elif path.startswith("/verify/") and "\n" not in path:  # werkzeug's ".*?" stops at a line feed: a 404
            # Envoy's ext_authz appends the client's path and query: there the query is the client's, never read.
            from_query = False
        else:
            return self.wsgi_app(environ, start_response)
        try:
            answer = self._answer(environ, path, from_query)
        except _Refer:
            return self.wsgi_app(environ, start_response)
        except Exception:
            # A fault (the database gone, say) gets Flask's own 500 handling and log: it verifies again there.
            return self.wsgi_app(environ, start_response)
        if not isinstance(answer, tuple):
            return answer(environ, start_response)  # a werkzeug response: a HEAD gets no body, as from Flask
        headers, data = answer
        start_response("200 OK", headers)
        return [] if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD" else [data]

    def _answer(self, environ, path: str, from_query: bool):
        """Verify the request: return a 200's headers and body, or a refusal as a werkzeug response."""
        started = time.perf_counter()
        environment = None
        parameters = []
        query = environ.get("QUERY_STRING")
        if from_query and query:
            # As werkzeug reads request.args: strict UTF-8, invalid percent-escapes kept as they are.
            args = parse_qsl(query.encode("latin1").decode(), keep_blank_values=True, errors="werkzeug.url_quote")
            for name, value in args:
                if name == "environment" and environment is None:
                    environment = value
                elif name == "scope":
                    parameters.append(value)
            if environment is not None and environment not in ENVIRONMENTS:
                raise _Refer()  # the view's 400 envelope, from the view itself
        try:
            required = required_scopes(environ.get(_SCOPES), parameters)
        except errors.ApiKeysError:
            raise _Refer() from None  # the view's 400 envelope, from the view itself
        state = self.state
        try:
            verified = verify_key(state, environ.get(_KEY), environment, required)
        except errors.VerificationError as error:
            metrics.count_verification(state, error.code, time.perf_counter() - started)
            # In the envelope, through the app's JSON provider, as errors.handle_error answers it.
            response = self.app.json.response(errors.error_body(error.status, error.message, code=error.code))
            response.status_code = error.status
            response.headers.update(error.headers())
            self._log(environ, path, error.status, started, None, None)
            return response
        body, headers = identity_answer(verified)
        data = body.encode()
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        metrics.count_verification(state, "VALID", time.perf_counter() - started)
        if self.log_verified:
            self._log(environ, path, 200, started, verified.tenant_id, verified.id)
        return headers, data

    @staticmethod
    def _log(environ, path: str, status: int, started: float, tenant: str | None, key_id: str | None) -> None:
        if not logs.log.isEnabledFor(logs.logging.INFO):
            return
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        # The path as request.path has it: the WSGI string's bytes read as UTF-8.
        path = path.encode("latin1").decode(errors="replace")
        logs.log_request(environ.get("REQUEST_METHOD", "GET").upper(), path, status, duration_ms, tenant, key_id)


def init_app(app) -> None:
    """Wrap the app's WSGI callable so /verify is answered before Flask's request machinery."""
    app.wsgi_app = VerifyFastPath(app, app.wsgi_app)
