"""The REST path table and the error decoder the clients share (contracts.ApiPath, API_ROUTES,
error_line): the table is exactly what the node's router serves, so it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cortex_node.contracts import API_ROUTES, CONTROL_ACTIONS, ApiPath, error_line

A2A_PREFIXES = ("/a2a", "/.well-known/")  # the A2A protocol's own paths, not the REST API


def shape(path: str) -> str:
    """A route with its placeholders unnamed: renaming {node_id} to {id} is not drift."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def served_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, route) of everything the node's application serves, from its router; building
    the app opens and starts nothing."""
    from cortex_node.app import build_app
    from cortex_node.clock import SystemClock
    from cortex_node.config import NodeSettings

    app = build_app(NodeSettings(name="x", data_dir=tmp_path), SystemClock(), node_id="node_x")
    return {(r.method, shape(r.resource.canonical)) for r in app.router.routes()
            if r.method not in ("HEAD", "OPTIONS") and r.resource is not None}


def test_every_path_of_the_table_is_a_route_the_node_serves(tmp_path: Path) -> None:
    served = served_routes(tmp_path)
    missing = [(method, path) for method, path in API_ROUTES if (method, shape(path)) not in served]
    assert not missing, f"in contracts.API_ROUTES but not served by api/routes.py: {missing}"


def test_every_rest_route_the_node_serves_is_in_the_table(tmp_path: Path) -> None:
    table = {(method, shape(path)) for method, path in API_ROUTES}
    unlisted = sorted(route for route in served_routes(tmp_path)
                      if not route[1].startswith(A2A_PREFIXES) and route not in table)
    assert not unlisted, f"served by api/routes.py but missing from contracts.API_ROUTES: {unlisted}"


def test_the_table_has_no_duplicates() -> None:
    assert len(set(API_ROUTES)) == len(API_ROUTES)


def test_the_templates_fill_in_quoted_ids() -> None:
    assert ApiPath.NODE(node_id="node_a") == "/api/swarm/nodes/node_a"
    assert ApiPath.NODE_SNAPSHOTS(node_id="node_a") == "/api/swarm/nodes/node_a/snapshots"
    assert ApiPath.NODE_EVENTS(node_id="node_a") == "/api/swarm/nodes/node_a/events"
    assert ApiPath.DIRECTIVE(directive_id="dir_1") == "/api/swarm/directives/dir_1"
    assert ApiPath.DIRECTIVE_CANCEL(directive_id="dir_1") == "/api/swarm/directives/dir_1/cancel"
    assert ApiPath.STATE(namespace="memory", key="a key/x") == "/api/swarm/state/memory/a%20key%2Fx"
    assert ApiPath.NODE(node_id="../seal") == "/api/swarm/nodes/..%2Fseal"  # an id cannot reach another route
    with pytest.raises(KeyError):
        ApiPath.NODE(id="node_a")  # a placeholder left empty is a mistake, not a path


def test_control_paths_address_the_answering_node_or_another_by_id() -> None:
    assert [ApiPath.control(a) for a in CONTROL_ACTIONS] == [f"/api/swarm/{a}" for a in CONTROL_ACTIONS]
    assert ApiPath.control("seal", "node_b") == "/api/swarm/nodes/node_b/seal"
    served = {path for _, path in API_ROUTES}
    assert {ApiPath.control(a) for a in CONTROL_ACTIONS} <= served
    assert {ApiPath.control(a, "{node_id}").replace("%7B", "{").replace("%7D", "}") for a in CONTROL_ACTIONS} <= served
    with pytest.raises(ValueError, match="drain, undrain, seal"):
        ApiPath.control("reboot")


# --- the error decoder ----------------------------------------------------------------------------
NODE_ERROR = {"error": {"code": "not_found", "message": "no node with id 'node_z'"}}


@pytest.mark.parametrize("body", [NODE_ERROR, '{"error": {"code": "not_found", "message": "no node with id \'node_z\'"}}',
                                  b'{"error": {"code": "not_found", "message": "no node with id \'node_z\'"}}'])
def test_the_node_s_message_is_the_line_whatever_form_the_body_came_in(body: object) -> None:
    assert error_line(404, body) == "404: no node with id 'node_z'"


def test_401_names_the_node_and_says_how_to_pass_the_token() -> None:
    line = error_line(401, {"error": {"code": "unauthorized", "message": "missing or wrong swarm token"}},
                      "the node at http://127.0.0.1:4220")
    assert line == ("the node at http://127.0.0.1:4220 refused the request (401): missing or wrong swarm token; "
                    "pass --token-file or set CORTEX_SWARM_TOKEN_FILE")


@pytest.mark.parametrize("status, body, line", [
    (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "502: Bad Gateway"),  # a proxy's page
    (500, "something broke\nTraceback (most recent call last):", "500: something broke"),  # plain text
    (503, b"", "503: Service Unavailable"),
    (599, None, "599: HTTP 599"),
    (400, {"error": {"code": "bad_request", "message": "ttlMs must be\n an integer"}}, "400: ttlMs must be an integer"),
    (400, {"error": "not the shape"}, "400: Bad Request"),
    (404, [1, 2], "404: Not Found"),
    (502, "123", "502: 123"),  # JSON, but not the error shape: the text as it came
    (500, b"\xff\xfe not utf-8", "500: \ufffd\ufffd not utf-8"),
])
def test_anything_else_is_still_one_readable_line(status: int, body: object, line: str) -> None:
    assert error_line(status, body) == line
