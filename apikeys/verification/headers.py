"""The header names of verification, written once: what a client presents, what a proxy asks, what /verify answers."""

API_KEY = "X-Api-Key"
# Set by the proxy, per route; never the client's (every shipped proxy file overwrites or removes them).
REQUIRED_SCOPES = "X-Api-Key-Required-Scopes"
# /verify's answer, which the proxy copies onto the request it forwards.
KEY_ID = "X-Api-Key-Id"
TENANT_ID = "X-Tenant-Id"
ENVIRONMENT = "X-Api-Key-Environment"
SCOPES = "X-Api-Key-Scopes"
