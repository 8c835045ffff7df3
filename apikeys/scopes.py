"""Scopes: what a scope may be, and whether a key's scopes grant the ones a request requires."""

from __future__ import annotations

import re

PATTERN = r"[A-Za-z0-9_.:*-]{1,64}"
MAX_SCOPES = 50
_SCOPE = re.compile(PATTERN, re.ASCII)


def is_valid(scope) -> bool:
    """Tell whether ``scope`` follows the scope grammar: 1 to 64 of A-Z a-z 0-9 _ . : * -."""
    return isinstance(scope, str) and _SCOPE.fullmatch(scope) is not None


def grants(granted: list[str], required: str) -> bool:
    """Tell whether a key's scopes grant ``required``: itself, ``*``, or a ``prefix:*`` it starts with."""
    for scope in granted:
        if scope == required or scope == "*":
            return True
        if scope.endswith(":*") and required.startswith(scope[:-1]):
            return True
    return False


def missing(granted: list[str], required: list[str]) -> list[str]:
    """Return the required scopes that ``granted`` does not grant."""
    return [scope for scope in required if not grants(granted, scope)]


# The same rule as parse_required, for the OpenAPI document: scopes separated by commas, spaces and tabs
# (a ``scope`` parameter names at least one).
REQUIRED_LIST_PATTERN = rf"^[ \t,]*(?:{PATTERN}[ \t,]+)*(?:{PATTERN}[ \t,]*)?$"
REQUIRED_PATTERN = rf"^[ \t,]*(?:{PATTERN}[ \t,]+)*{PATTERN}[ \t,]*$"
# A proxy may send one scope per header line, which the server joins with commas, or several on one line.
_SEPARATORS = re.compile(r"[ \t,]+")


def parse_required(value: str) -> list[str]:
    """Split required scopes on commas, spaces and tabs; raise ValueError for any outside the scope grammar."""
    required = [scope for scope in _SEPARATORS.split(value) if scope]
    invalid = [scope for scope in required if not is_valid(scope)]
    if invalid:
        raise ValueError(f"Not a scope: {invalid[0][:64]!r}; a scope is 1 to 64 of A-Z a-z 0-9 _ . : * -.")
    return required
