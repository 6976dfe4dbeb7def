"""The OpenAPI 3.0 document of the REST API. Schemas of the wire documents are derived from the
dataclasses in contracts.py, so the description cannot drift from what the handlers send."""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from cortex_node import contracts as c
from cortex_node.contracts import SNAPSHOT_RETENTION, SWARM_VERSION, camel

# every document the API sends or takes, described from its dataclass
_MODELS = [
    c.Usage, c.NodeMetrics, c.SwarmNode, c.NodeUsage, c.SwarmResourceReport, c.ProcessInfo, c.TopologyNode,
    c.SwarmTopology, c.SeriesPoint, c.NodeHistoryEntry, c.DirectiveRecord, c.DispatchRequest, c.StateVersion,
    c.StateRecord, c.InboxMessage, c.QueueFigures, c.Health, c.ControlRequest, c.DrainRequest,
]
_REQUESTS = (c.DispatchRequest, c.ControlRequest, c.DrainRequest)  # documents a client sends: only fields without a default are required


def _schema_for(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        schema = _schema_for(inner[0]) if len(inner) == 1 else {"anyOf": [_schema_for(a) for a in inner]}
        if type(None) in args:
            schema = dict(schema, nullable=True) if "$ref" not in schema else {"allOf": [schema], "nullable": True}
        return schema
    if origin in (list, tuple):
        return {"type": "array", "items": _schema_for(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_for(args[1]) if len(args) > 1 else {}}
    if hint is Any:
        return {}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [m.value for m in hint]}
    if dataclasses.is_dataclass(hint):
        return {"$ref": f"#/components/schemas/{hint.__name__}"}
    return {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
            str: {"type": "string"}}.get(hint, {})


def _without_none(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _model_schema(cls: type) -> dict[str, Any]:
    """Every field, with the JSON-schema words its ``metadata["schema"]`` adds. An answer always
    carries every field; a request needs only those without a default, and nothing else."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    request = cls in _REQUESTS
    # a request leaves an optional field out; it never sends null (read_strict refuses it)
    props = {camel(f.name): {**_schema_for(_without_none(hints[f.name]) if request else hints[f.name]),
                             **f.metadata.get("schema", {})} for f in fields}
    if not request:
        return {"type": "object", "required": list(props), "properties": props}
    required = [camel(f.name) for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    return dict(schema, required=required) if required else schema


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERR = {"$ref": "#/components/responses/Error"}
_REF = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
_NODE_ID = {"name": "node_id", "in": "path", "required": True, "schema": {"type": "string"}}
_DIRECTIVE_ID = {"name": "directive_id", "in": "path", "required": True, "schema": {"type": "string"}}
_STATE_PARAMS = [
    {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string", "enum": ["memory", "skills", "config"]}},
    {"name": "key", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
]


def _op(summary: str, ok: dict[str, Any], *, params: list | None = None, errors: tuple[int, ...] = (401,),
        body: dict | None = None, ok_status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok_status: ok, **{str(e): _ERR for e in errors}}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    schemas = {m.__name__: _model_schema(m) for m in _MODELS}
    schemas["DispatchRequest"].update({
        "description": "Name exactly one target: targetNodeId, targetEndpoint or group.",
        "oneOf": [{"required": ["targetNodeId"]}, {"required": ["targetEndpoint"]}, {"required": ["group"]}],
    })
    schemas["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
    }
    control_body, drain_body = _REF("ControlRequest"), _REF("DrainRequest")
    dispatch_answer = {"oneOf": [_REF("DirectiveRecord"), {
        "type": "object", "required": ["group", "directives"],
        "properties": {"group": {"type": "string"},
                       "directives": {"type": "array", "items": _REF("DirectiveRecord")}}}]}
    limit = lambda default, hi: {  # noqa: E731
        "name": "limit", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": hi, "default": default},
    }
    paths = {
        "/healthz": {"get": _op("Liveness of this node (public)", _ok(_REF("Health")), errors=())},
        "/api/swarm/nodes": {"get": _op("Every node this node knows, with status and metrics", _ok({
            "type": "object", "required": ["selfId", "nodes"],
            "properties": {"selfId": {"type": "string"}, "nodes": {"type": "array", "items": _REF("SwarmNode")}}}))},
        "/api/swarm/nodes/metrics": {"get": _op("Metrics of the nodes that are up", _ok({
            "type": "object", "required": ["nodes"],
            "properties": {"nodes": {"type": "array", "items": {
                "type": "object", "required": ["nodeId", "name", "status", "metrics"],
                "properties": {"nodeId": {"type": "string"}, "name": {"type": "string"},
                               "status": _schema_for(c.NodeStatus),
                               "lastHeartbeat": {"type": "string", "nullable": True},
                               "metrics": _REF("NodeMetrics")}}}}}))},
        "/api/swarm/nodes/{node_id}": {"get": _op("One node", _ok(_REF("SwarmNode")), params=[_NODE_ID],
                                                  errors=(401, 404))},
        "/api/swarm/nodes/{node_id}/snapshots": {"get": _op(
            "A node's resource time series, oldest first (the newest `limit` samples at or after `since`)",
            _ok({"type": "object", "required": ["nodeId", "snapshots"],
                 "properties": {"nodeId": {"type": "string"},
                                "snapshots": {"type": "array", "items": _REF("SeriesPoint")}}}),
            params=[_NODE_ID, limit(SNAPSHOT_RETENTION, SNAPSHOT_RETENTION),
                    {"name": "since", "in": "query", "required": False,
                     "schema": {"type": "string", "format": "date-time"}}],
            errors=(400, 401, 404))},
        "/api/swarm/nodes/{node_id}/events": {"get": _op(
            "A node's recent events, newest first",
            _ok({"type": "object", "required": ["nodeId", "events"],
                 "properties": {"nodeId": {"type": "string"},
                                "events": {"type": "array", "items": _REF("NodeHistoryEntry")}}}),
            params=[_NODE_ID, limit(50, 200)], errors=(400, 401, 404))},
        "/api/swarm/report": {"get": _op("Fleet resource report over the last 24 h",
                                         _ok(_REF("SwarmResourceReport")))},
        "/api/swarm/topology": {"get": _op("Nodes and the process tree", _ok(_REF("SwarmTopology")))},
        "/api/swarm/drain": {"post": _op("Drain this node: no new work, in-flight work finishes (deadlineSeconds: "
                                         "cancel what still runs then)",
                                         _ok(_REF("SwarmNode")), body=drain_body, errors=(400, 401, 409))},
        "/api/swarm/undrain": {"post": _op("Take work again", _ok(_REF("SwarmNode")), body=control_body,
                                           errors=(400, 401, 409))},
        "/api/swarm/seal": {"post": _op("Seal this node: stop the heartbeat, finish in-flight work, exit 0",
                                        _ok(_REF("SwarmNode"), "Accepted; the daemon exits shortly"),
                                        body=control_body, errors=(400, 401, 409), ok_status="202")},
        "/api/swarm/nodes/{node_id}/drain": {"post": _op(
            "Drain any node: this one, or a peer over A2A", _ok({"$ref": "#/components/schemas/SwarmNode"}),
            params=[_NODE_ID], body=drain_body, errors=(400, 401, 404, 409, 502))},
        "/api/swarm/nodes/{node_id}/undrain": {"post": _op(
            "Undrain any node", _ok({"$ref": "#/components/schemas/SwarmNode"}), params=[_NODE_ID], body=control_body,
            errors=(400, 401, 404, 409, 502))},
        "/api/swarm/nodes/{node_id}/seal": {"post": _op(
            "Seal any node", _ok(_REF("SwarmNode"), "Accepted"), params=[_NODE_ID], body=control_body,
            errors=(400, 401, 404, 409, 502), ok_status="202")},
        "/api/swarm/nodes/{node_id}/forget": {"post": _op(
            "Forget a peer: its row, series, usage and history are dropped (it comes back if it beats again)",
            _ok({"type": "object", "required": ["forgotten"], "properties": {"forgotten": {"type": "string"}}}),
            params=[_NODE_ID], errors=(401, 404, 409))},
        "/api/swarm/directives/{directive_id}": {"get": _op(
            "One directive's row", _ok(_REF("DirectiveRecord")), params=[_DIRECTIVE_ID], errors=(401, 404))},
        "/api/swarm/directives/{directive_id}/cancel": {"post": _op(
            "Cancel a directive this node sent", _ok(_REF("DirectiveRecord")), params=[_DIRECTIVE_ID],
            errors=(401, 404))},
        "/api/swarm/messages": {"get": _op(
            "The forward_message inbox, newest first",
            _ok({"type": "object", "required": ["messages"],
                 "properties": {"messages": {"type": "array", "items": _REF("InboxMessage")}}}),
            params=[{"name": "sessionId", "in": "query", "required": False, "schema": {"type": "string"}}, limit(100, 1000)],
            errors=(400, 401))},
        "/api/swarm/state/{namespace}/{key}": {
            "get": _op("One sync_state entry", _ok(_REF("StateRecord")), params=_STATE_PARAMS, errors=(400, 401, 404)),
            "put": {**_op("Write one sync_state entry (a new version from this node); 409 when the namespace "
                          "is full", _ok(_REF("StateRecord")), params=_STATE_PARAMS, errors=(400, 401, 409)),
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["value"], "properties": {"value": {}},
                        "additionalProperties": False}}}}},
        },
        "/api/swarm/events": {"get": {"summary": "Server-sent events of changes (node status, heartbeats, directives, processes)",
                                      "responses": {"200": {"description": "An event stream: `id`, `event` (the kind) "
                                                                           "and `data` (a JSON object) per change",
                                                            "content": {"text/event-stream": {"schema": {
                                                                "type": "object",
                                                                "properties": {"id": {"type": "string"},
                                                                               "event": {"type": "string"},
                                                                               "data": {"type": "string"}}}}}},
                                                    "401": _ERR}}},
        "/metrics": {"get": {"summary": "Prometheus text format",
                             "responses": {"200": {"description": "Metrics",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                           "401": _ERR}}},
        "/api/swarm/directives": {
            "get": _op(
                "The directive audit trail, newest first",
                _ok({"type": "object", "required": ["directives"],
                     "properties": {"directives": {"type": "array", "items": _REF("DirectiveRecord")}}}),
                params=[{"name": "status", "in": "query", "required": False, "schema": _schema_for(c.DirectiveStatus)},
                        limit(50, 1000)],
                errors=(400, 401)),
            "post": {"summary": "Dispatch a directive to a node (by id or URL) or a group: 200 with the finished "
                                "row(s), or 202 at once with wait=false",
                     "responses": {"200": _ok(dispatch_answer),
                                   "202": _ok(dispatch_answer, "Accepted; the directive goes on in the background"),
                                   "400": _ERR, "401": _ERR},
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _REF("DispatchRequest")}}}},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "cortex-node REST API", "version": SWARM_VERSION,
                 "description": "Fleet state and control of one Cortex Swarm node. When the node has a swarm "
                                "token, every /api/* route needs 'Authorization: Bearer <token>'."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": _REF("Error")}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
