"""The OpenAPI document describes every REST route the node serves, with the right methods."""

from __future__ import annotations

from cortex_node.api.openapi import openapi_document
from cortex_node.api.routes import routes


def test_every_route_is_described() -> None:
    doc = openapi_document()
    served = {(r.path, r.method.lower()) for r in routes if r.path != "/openapi.json"}
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == described


def test_every_reference_resolves() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        kind, name = ref.split("/")[-2:]
        assert name in doc["components"][kind], ref
    assert "SwarmNode" in schemas and "DirectiveRecord" in schemas
