"""The shipped Traefik and Envoy files: the settings the forward-auth contract relies on, read as text and as YAML."""

from __future__ import annotations

import re
import urllib.parse

import pytest
import yaml

from tests.forward_auth.support import ENVOY_EXAMPLE
from tests.forward_auth.support import ENVOY_PATH_PREFIX
from tests.forward_auth.support import FORGED_VALUES
from tests.forward_auth.support import IDENTITY_HEADERS
from tests.forward_auth.support import LIMIT_HEADERS
from tests.forward_auth.support import PROXY_HEADERS
from tests.forward_auth.support import TRAEFIK_EXAMPLE
from tests.forward_auth.support import TRAEFIK_STATIC_EXAMPLE
from tests.forward_auth.support import TRAEFIK_VERIFY_PATH
from tests.forward_auth.support import forged_headers

pytestmark = pytest.mark.slow


def test_traefik_example_settings():
    text = TRAEFIK_EXAMPLE.read_text()
    assert re.search(r"^\s*forwardAuth:\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*trustForwardHeader:\s*false\s*$", text, re.MULTILINE)
    block = re.search(r"authResponseHeaders:\s*\n((?:\s*-\s*\S+\s*\n)+)", text)
    assert block is not None
    assert set(re.findall(r"-\s*(\S+)", block.group(1))) == set(IDENTITY_HEADERS)

    data = yaml.safe_load(TRAEFIK_EXAMPLE.read_text())
    middlewares = data["http"]["middlewares"]
    checks = [name for name, middleware in middlewares.items() if "forwardAuth" in middleware]
    assert checks == ["apikeys", "apikeys-admin"]  # any valid key; a key granting admin:users
    for name in checks:
        auth = middlewares[name]["forwardAuth"]
        address = urllib.parse.urlsplit(auth["address"])
        assert address.path == TRAEFIK_VERIFY_PATH
        assert address.query == ("" if name == "apikeys" else "scope=admin:users")
        assert auth["trustForwardHeader"] is False
        # The key (in X-Api-Key or Authorization: Bearer); none of the client's other headers reach /verify.
        assert auth["authRequestHeaders"] == ["X-Api-Key", "Authorization"]
        assert auth["authResponseHeaders"] == list(IDENTITY_HEADERS)
    routers = data["http"]["routers"]
    assert routers
    for router in routers.values():
        assert router["middlewares"][0] in checks  # the key is checked before anything else runs
        assert router["service"] in data["http"]["services"]
    # The middleware that cleans up after it removes the key and the proxy's headers; every router runs it.
    removed = {
        header
        for header, value in middlewares["apikeys-clean"]["headers"]["customRequestHeaders"].items()
        if value == ""
    }
    assert {"X-Api-Key", "Authorization", *PROXY_HEADERS} <= removed
    for router in routers.values():
        assert router["middlewares"] == [router["middlewares"][0], "apikeys-clean"]

    # Look-alikes (X-Tenant_Id, X_Tenant_Id, X.Tenant.Id) are deleted by every entry point a router uses, before
    # any middleware runs, by the static configuration that reads this file.
    static = yaml.safe_load(TRAEFIK_STATIC_EXAMPLE.read_text())
    assert static["providers"]["file"]["filename"].endswith("/" + TRAEFIK_EXAMPLE.name)
    used = {name for router in routers.values() for name in router["entryPoints"]}
    assert used and used <= set(static["entryPoints"])
    for name in used:
        assert static["entryPoints"][name]["http"]["aliasHeadersStrategy"] == "delete"


def test_envoy_example_settings():
    text = ENVOY_EXAMPLE.read_text()
    assert re.search(r"allowed_headers:\s*\n\s*patterns:\s*\n\s*-\s*exact:\s*x-api-key\s*$", text, re.MULTILINE)
    assert re.search(rf"^\s*path_prefix:\s*{re.escape(ENVOY_PATH_PREFIX)}\s*$", text, re.MULTILINE)
    block = re.search(r"allowed_upstream_headers:\s*\n\s*patterns:\s*\n((?:\s*-\s*exact:\s*\S+\s*\n)+)", text)
    assert block is not None
    assert set(re.findall(r"exact:\s*(\S+)", block.group(1))) == {h.lower() for h in IDENTITY_HEADERS}

    data = yaml.safe_load(ENVOY_EXAMPLE.read_text())
    resources = data["static_resources"]
    (listener,) = resources["listeners"]
    (manager,) = [f["typed_config"] for chain in listener["filter_chains"] for f in chain["filters"]]
    names = [f["name"] for f in manager["http_filters"]]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    # Before ext_authz sets the identity from apikeys' answer, every client header of those names and of the
    # proxy's own /verify headers is removed: ext_authz only overrides the headers apikeys answers with.
    mutation = manager["http_filters"][0]["typed_config"]
    assert mutation["@type"].endswith("header_mutation.v3.HeaderMutation")
    mutations = mutation["mutations"]["request_mutations"]
    removed = [m["remove"] for m in mutations if "remove" in m]
    assert removed == [h.lower() for h in (*IDENTITY_HEADERS, *PROXY_HEADERS, *LIMIT_HEADERS)]
    # And, in the same filter, every look-alike (x.api.key.scopes) that PHP would read as one of them; the regex is
    # simple enough that Python's re reads it as Envoy's RE2 does, and Envoy matches it against the whole name.
    (matcher,) = [m["remove_on_match"]["key_matcher"] for m in mutations if "remove_on_match" in m]
    assert len(mutations) == len(removed) + 1
    look_alike = re.compile(matcher["safe_regex"]["regex"])
    forged = {name.lower() for name, _ in forged_headers()}
    assert {name for name in forged if not look_alike.fullmatch(name)} == {h.lower() for h in FORGED_VALUES}
    kept = [":authority", ":method", ":path", ":scheme", ":protocol", "host", "x-api-key", "content-type", "x-b3-id"]
    assert [name for name in kept if look_alike.fullmatch(name)] == []
    ext_authz = manager["http_filters"][1]["typed_config"]
    assert ext_authz["@type"].endswith("ext_authz.v3.ExtAuthz")
    assert ext_authz["failure_mode_allow"] is False
    # The key (in X-Api-Key or Authorization: Bearer) and nothing else.
    assert ext_authz["allowed_headers"]["patterns"] == [{"exact": "x-api-key"}, {"exact": "authorization"}]
    # Neither reaches the application.
    (host,) = manager["route_config"]["virtual_hosts"]
    for route in host["routes"]:
        assert {"x-api-key", "authorization"} <= set(route["request_headers_to_remove"])
    service = ext_authz["http_service"]
    assert service["path_prefix"] == ENVOY_PATH_PREFIX
    upstream = service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    assert [p["exact"] for p in upstream] == [h.lower() for h in IDENTITY_HEADERS]
    assert service["server_uri"]["cluster"] in [c["name"] for c in resources["clusters"]]
    assert manager["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
