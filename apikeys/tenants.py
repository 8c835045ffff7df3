"""What a tenant id may be, applied everywhere one enters (tokens, the CLI, imports), and how it goes into a header.

A tenant is 1 to 255 characters of printable Unicode: no control, format
(bidi overrides, zero-width), separator-line or unassigned characters, and no
white space at either end. In the identity headers /verify answers with, it is
percent-encoded (UTF-8) wherever it is not printable ASCII, and ``%`` itself is
encoded too, so the header is plain ASCII and decodes (``urllib.parse.unquote``)
to exactly one tenant: ``café`` is ``caf%C3%A9`` and ``100%`` is ``100%25``.
"""

from __future__ import annotations

import string
import urllib.parse

MAX_LENGTH = 255
RULE = "1 to 255 printable characters, without control or formatting characters or surrounding spaces"

# Printable ASCII but "%" (and space, which an HTTP header would fold at the ends) is sent as is.
_HEADER_SAFE = "".join(char for char in string.printable if char.isprintable() and char not in "% ")


def is_valid(tenant) -> bool:
    """Tell whether ``tenant`` follows the tenant grammar."""
    return (
        isinstance(tenant, str)
        and 0 < len(tenant) <= MAX_LENGTH
        and tenant.isprintable()  # False for Cc, Cf, Cs, Co, Cn, Zl, Zp and every separator but " "
        and tenant.strip() == tenant
    )


def header_value(tenant: str) -> str:
    """Return ``tenant`` as plain ASCII for an HTTP header, percent-encoded where it is not printable ASCII."""
    if tenant.isascii() and tenant.isprintable() and "%" not in tenant and " " not in tenant:
        return tenant  # the usual case, without the cost of quote()
    return urllib.parse.quote(tenant, safe=_HEADER_SAFE)
