"""apikeys: a self-hosted API-key service, and the helpers to verify its keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apikeys.errors import VerificationError
    from apikeys.factory import create_app
    from apikeys.verification.core import VerifiedKey
    from apikeys.verification.extension import ApiKeys
    from apikeys.verification.extension import require_api_key
    from apikeys.verification.extension import verify_api_key

__all__ = ["ApiKeys", "VerificationError", "VerifiedKey", "create_app", "require_api_key", "verify_api_key"]

_LAZY = {
    "ApiKeys": "apikeys.verification.extension",
    "VerifiedKey": "apikeys.verification.core",
    "require_api_key": "apikeys.verification.extension",
    "verify_api_key": "apikeys.verification.extension",
    "VerificationError": "apikeys.errors",
    "create_app": "apikeys.factory",
}


def __getattr__(name: str):
    # Imported on first use, so that importing the pytest plugin (apikeys.testing)
    # costs other projects' test runs nothing until they use a fixture.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'apikeys' has no attribute {name!r}")
