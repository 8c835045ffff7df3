"""The OpenAPI document: served, complete, and the committed copy up to date."""

from __future__ import annotations

import json

from tests.servers import ROOT

COMMITTED = ROOT / "schemas" / "openapi.json"


def test_committed_copy_is_up_to_date(client):
    served = client.get("/openapi.json").json
    committed = json.loads(COMMITTED.read_text())
    assert served == committed, "schemas/openapi.json is stale: run `make openapi`"


def test_docs_page_is_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert b"swagger" in response.data.lower()


def test_every_route_is_documented_with_its_envelopes(client):
    spec = client.get("/openapi.json").json
    paths = spec["paths"]
    assert set(paths) >= {
        "/dashboard/api-keys",
        "/dashboard/api-keys/{key_id}",
        "/dashboard/api-keys/{key_id}/regenerate",
        "/dashboard/api-keys/{key_id}/toggle",
        "/dashboard/audit-log",
        "/verify",
        "/verify/{subpath}",
        "/healthz",
        "/readyz",
    }
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"statusCode", "error", "message"}
    assert spec["components"]["responses"]["UNAUTHORIZED"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("summary"), f"{method} {path} has no summary"
            if path.startswith("/dashboard"):
                assert "401" in operation["responses"], f"{method} {path} does not document 401"
                assert "security" not in operation  # the document-wide bearer requirement applies
            elif path.startswith("/verify"):
                assert operation["security"] == [{"apiKey": []}, {"apiKeyBearer": []}]  # either one
            else:
                assert operation["security"] == []
    assert spec["security"] == [{"bearerAuth": []}]
    created = spec["components"]["schemas"]["CreatedKeyEnvelope"]["properties"]
    assert created["statusCode"] == {"type": "integer", "enum": [201]}
    assert "400" in paths["/dashboard/api-keys"]["post"]["responses"]
    assert "422" not in json.dumps(spec)


def test_every_ref_resolves(client):
    spec = client.get("/openapi.json").json
    text = json.dumps(spec)
    import re

    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = spec
        for part in ref.split("/"):
            node = node[part]
        assert node
