"""The baseline a user would pick: one Flask JSON endpoint, about the size of a /verify answer.

bench.run copies this file to an empty directory as app.py and serves it with
`gunicorn -w 4 app:app`, gunicorn's defaults (sync workers, no access log, no config file).
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/plain")
def plain():
    """Answer a JSON body and headers shaped like a successful /verify."""
    data = {
        "valid": True,
        "id": "key_0123456789abcdef",
        "tenantId": "bench",
        "environment": "test",
        "name": "bench key",
        "publicKey": "pk_test_0123456789abcdef",
    }
    headers = {"X-Api-Key-Id": data["id"], "X-Tenant-Id": data["tenantId"], "X-Api-Key-Environment": "test"}
    return {"statusCode": 200, "data": data}, headers
