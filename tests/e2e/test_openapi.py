"""The JSON API's own documentation at the edge, and Envoy's own errors in the API's shape.

The edge serves the OpenAPI document `make protos` writes, and a page (the
npm-pinned swagger-ui) that renders it; a JSON caller's malformed body or
query, or a path with no route, gets a google.rpc.Status JSON body like
every error a service answers with.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator

import grpc
import httpx
import pytest
from shopstack.envoy.common import DOCS_ASSETS
from shopstack.topology import ROOT

from .support import Shop

OPENAPI = ROOT / "protos" / "gen" / "openapi.json"


@pytest.fixture(scope="module")
def http(shop: Shop) -> Iterator[httpx.Client]:
    # TLS, trusting the stack's CA, as `curl --cacert .run/certs/ca.crt` does.
    with httpx.Client(
        base_url=f"https://{shop.stack.public_addr}",
        timeout=15,
        verify=ssl.create_default_context(cafile=str(shop.stack.certs.ca)),
    ) as client:
        yield client


@pytest.mark.parametrize("path", ["/openapi.json", "/v1/openapi.json"])
def test_the_edge_serves_the_generated_openapi_document(http: httpx.Client, path: str) -> None:
    reply = http.get(path)
    assert reply.status_code == 200, reply.text[:500]
    assert reply.headers["content-type"] == "application/json"
    document = reply.json()
    assert document == json.loads(OPENAPI.read_text())
    assert document["openapi"].startswith("3.")
    assert "/v1/orders" in document["paths"] and "/v1/products/{productId}" in document["paths"]


def test_the_document_has_the_error_schema_and_the_examples_from_the_proto_comments() -> None:
    document = json.loads(OPENAPI.read_text())
    schemas = document["components"]["schemas"]
    assert set(schemas["google.rpc.Status"]["properties"]) == {"code", "message", "details"}
    for operations in document["paths"].values():
        for operation in operations.values():
            errors = {code: r for code, r in operation["responses"].items() if code != "200"}
            assert set(errors) == {"400", "401", "403", "404", "409", "429", "503", "504"}, operation["operationId"]
            for response in errors.values():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/google.rpc.Status"}, operation["operationId"]
    # "for example "sku-espresso-1kg"" in catalog_service.proto's comment on Product.id.
    assert schemas["shop.catalog.v1.Product"]["properties"]["id"]["example"] == "sku-espresso-1kg"


def test_the_docs_page_renders_the_document_with_files_the_edge_serves(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'url: "/openapi.json"' in page.text
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f'"/docs/{name}"' in page.text
        asset = http.get(f"/docs/{name}")
        assert asset.status_code == 200, name
        assert asset.content == (DOCS_ASSETS / name).read_bytes(), name


def status_json(reply: httpx.Response) -> dict:
    assert reply.headers["content-type"].startswith("application/json"), reply.text
    body = reply.json()
    assert set(body) == {"code", "message", "details"}, body
    return body


def signed_in(shop: Shop) -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {shop.stack.token('openapi-tests')}"}


def test_a_missing_token_is_a_401_google_rpc_status(http: httpx.Client) -> None:
    reply = http.post("/v1/orders", content=b"{}", headers={"content-type": "application/json"})
    assert reply.status_code == 401, reply.text
    assert status_json(reply)["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


def test_a_body_with_a_wrongly_typed_field_is_a_400_google_rpc_status(shop: Shop, http: httpx.Client) -> None:
    reply = http.post("/v1/orders", content=b'{"lines": "x"}', headers=signed_in(shop))
    assert reply.status_code == 400, reply.text
    body = status_json(reply)
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "lines" in body["message"], body


def test_a_body_that_is_not_json_is_a_400_google_rpc_status(shop: Shop, http: httpx.Client) -> None:
    reply = http.post("/v1/orders", content=b"{not json", headers=signed_in(shop))
    assert reply.status_code == 400, reply.text
    assert status_json(reply)["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_an_unknown_query_parameter_is_a_400_google_rpc_status(http: httpx.Client) -> None:
    reply = http.get("/v1/products", params={"colour": "red"})
    assert reply.status_code == 400, reply.text
    body = status_json(reply)
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "colour" in body["message"], body


def test_a_path_with_no_route_is_a_404_google_rpc_status(http: httpx.Client) -> None:
    reply = http.get("/v1/nothing-here")
    assert reply.status_code == 404, reply.text
    body = status_json(reply)
    assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert "/openapi.json" in body["message"], body


def test_another_customers_orders_are_a_documented_403(shop: Shop, http: httpx.Client) -> None:
    """schemathesis found it: ListOrders for a customer_id that is not the
    token's is PERMISSION_DENIED (403), which the document did not list."""
    reply = http.get("/v1/orders", params={"customerId": "someone-else"}, headers=signed_in(shop))
    assert reply.status_code == 403, reply.text
    assert status_json(reply)["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    document = json.loads(OPENAPI.read_text())
    assert "403" in document["paths"]["/v1/orders"]["get"]["responses"]


def test_query_parameters_work_by_their_documented_json_names(http: httpx.Client) -> None:
    """The document names fields as JSON does (pageSize); the edge accepts those names."""
    reply = http.get("/v1/products", params={"pageSize": 1})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["products"]) == 1
