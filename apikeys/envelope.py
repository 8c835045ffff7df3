"""The error envelope: every refusal and HTTP error answered as {"statusCode", "error", "message", ...}."""

from __future__ import annotations

from http import HTTPStatus

from flask import current_app
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError

from apikeys.errors import ApiKeysError


def error_body(status: int, message: str, *, code: str | None = None, errors: dict | None = None) -> dict:
    """Return the envelope every error answers with."""
    body = {"statusCode": status, "error": HTTPStatus(status).phrase, "message": message}
    if code:
        body["code"] = code
    if errors:
        body["errors"] = errors
    return body


def error_response(status: int, message: str, *, code=None, errors=None, headers=None):
    """Return a JSON response holding the error envelope."""
    response = current_app.json.response(error_body(status, message, code=code, errors=errors))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def handle_error(error: ApiKeysError):
    """Answer one of our exceptions with the envelope."""
    return error_response(error.status, error.message, code=error.code, errors=error.errors, headers=error.headers())


# Messages for errors that werkzeug raises with an HTML-minded description.
MESSAGES = {
    400: "The request could not be understood.",
    404: "The requested resource was not found.",
    405: "The method is not allowed for this resource.",
    413: "The request body is too large.",
    415: "Send the body as JSON, with Content-Type: application/json.",
    500: "An unexpected error occurred.",
}


def handle_http_exception(error: HTTPException):
    """Turn any HTTPException, webargs' validation errors included, into the envelope."""
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    headers = dict(data.get("headers") or {})
    if isinstance(error, InternalServerError):
        # Never echo an unexpected exception to the client; Flask has logged it.
        return error_response(500, MESSAGES[500])
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    if errors:
        errors = _flatten_locations(errors)
        message = "The request is not valid: " + ", ".join(sorted(errors)) + "."
    else:
        message = data.get("message") or MESSAGES.get(error.code) or error.description
    return error_response(error.code, message, code=data.get("code"), errors=errors, headers=headers)


# What webargs and marshmallow call a whole-body problem, in words a client understands.
_BODY_MESSAGES = {"Invalid JSON body.": "The body is not valid JSON.", "Invalid input type.": "Must be a JSON object."}


def _flatten_locations(errors: dict) -> dict:
    """Name fields directly ({"json": {"name": [...]}} becomes {"name": [...]}); call the body "body"."""
    flat = {}
    for location, fields in errors.items():
        if isinstance(fields, dict):
            for field, messages in fields.items():
                _flatten_field(field, messages, flat)
        else:
            flat[location] = fields
    for key in ("json", "_schema"):
        if key in flat and isinstance(flat[key], list):
            flat["body"] = [_BODY_MESSAGES.get(message, message) for message in flat.pop(key)]
    return flat


def _flatten_field(field: str, messages, flat: dict) -> None:
    """Name a nested object's fields with dots (``rateLimit.limit``); its own problems go under its name."""
    if isinstance(messages, dict) and messages and all(isinstance(name, str) for name in messages):
        for name, texts in messages.items():
            _flatten_field(field if name == "_schema" else f"{field}.{name}", texts, flat)
        return
    texts = [_BODY_MESSAGES.get(text, text) if field != "json" else text for text in _messages(messages)]
    flat.setdefault(field, []).extend(texts)


def _messages(messages) -> list[str]:
    """Return a field's messages as a list of strings; an item's own (``{0: [...]}``) say which item."""
    if isinstance(messages, dict):
        return [f"Item {index}: {text}" for index, texts in messages.items() for text in _messages(texts)]
    return [str(text) for text in messages] if isinstance(messages, list) else [str(messages)]


def one_line(messages: dict) -> str:
    """Say marshmallow's errors on one line: ``scopes[0]: Must be ...; name: ...; rateLimit.limit: ...``."""
    parts = []
    for field, texts in messages.items():
        if isinstance(texts, dict) and texts and all(isinstance(name, str) for name in texts):
            # A nested object's fields, named with dots as the API names them; its own problems go under its name.
            parts.append(one_line({field if name == "_schema" else f"{field}.{name}": t for name, t in texts.items()}))
        elif isinstance(texts, dict):  # a list's or a dict's items: {index: [messages]}
            parts += [f"{field}[{index}]: {' '.join(map(str, item))}" for index, item in texts.items()]
        else:
            parts.append(f"{field}: {' '.join(map(str, texts))}")
    return "; ".join(parts)


def init_app(app) -> None:
    """Answer our exceptions and every HTTPException with the envelope."""
    app.register_error_handler(ApiKeysError, handle_error)
    app.register_error_handler(HTTPException, handle_http_exception)
