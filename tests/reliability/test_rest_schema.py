"""Schemathesis against a real node's own /openapi.json: every documented REST operation, with
generated valid and invalid input, answers without a 5xx and as the document says.

The node has a token, a peer, and some history (directives, state, snapshots), so the lists it
returns are not empty. Sealing would stop it: the seal operations are left out here and exercised
by the integration and fault tests on throwaway nodes.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.reliability.conftest import FAST
from tests.reliability.helpers import Node, wait_connected

TOKEN = f"schema-{uuid.uuid4().hex}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def rest_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("schema")
    node = Node(data_dir=base / "node", home=base / "home", name="schema", args=FAST, token=TOKEN).start()
    peer = Node(data_dir=base / "peer", home=base / "home", name="schema-peer", args=FAST + ["--seed", node.url],
                token=TOKEN).start()
    try:
        wait_connected(node, peer)
        for kind, payload in (("query_resources", {}), ("execute_task", {"command": ["echo", "hi"]}),
                              ("execute_task", {"command": ["false"]}),
                              ("sync_state", {"namespace": "memory", "entries": {}})):
            status, _ = node.post("/api/swarm/directives", {"targetNodeId": peer.node_id, "kind": kind,
                                                           "payload": payload})
            assert status == 200
        yield node
    finally:
        node.kill()
        peer.kill()


@pytest.fixture(scope="module")
def api_schema(rest_node: Node):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(rest_node.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r".*/seal$")


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_documented(case, rest_node: Node) -> None:  # type: ignore[no-untyped-def]
    response = case.call_and_validate(headers=AUTH)
    assert response.status_code < 500
    assert "Traceback" not in response.text


def test_the_node_is_still_healthy_after_the_schema_run(rest_node: Node) -> None:
    assert rest_node.get("/healthz")[1]["ok"] is True
    assert "Traceback" not in rest_node.log_text()
