"""The baseline: a plain Flask endpoint returning a small JSON, served by the same gunicorn config as apikeys."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/plain")
def plain():
    """Answer the smallest JSON envelope apikeys would answer."""
    return {"statusCode": 200, "data": {"ok": True}}
