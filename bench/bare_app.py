"""The ceiling: a bare WSGI callable answering what plain_app.py answers, with no framework at all.

bench.run copies this file to an empty directory as app.py and serves it like the baseline,
`gunicorn -w 4 app:app` with gunicorn's defaults: no server can answer /verify faster than this.
"""

from __future__ import annotations

import json

BODY = json.dumps(
    {
        "statusCode": 200,
        "data": {
            "valid": True,
            "id": "key_0123456789abcdef",
            "tenantId": "bench",
            "environment": "test",
            "name": "bench key",
            "publicKey": "pk_test_0123456789abcdef",
        },
    },
    separators=(",", ":"),
).encode()
HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(BODY))),
    ("X-Api-Key-Id", "key_0123456789abcdef"),
    ("X-Tenant-Id", "bench"),
    ("X-Api-Key-Environment", "test"),
]


def app(environ, start_response):
    """Answer every request with the JSON body and headers of a successful /verify."""
    start_response("200 OK", HEADERS)
    return [BODY]
