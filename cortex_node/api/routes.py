"""The node's REST API (camelCase JSON). Every route is described in api/openapi.py."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from cortex_node.api.http import ApiError, json_response, query_enum, query_int, read_json_object
from cortex_node.api.metrics import prometheus_text
from cortex_node.api.openapi import openapi_document
from cortex_node.contracts import (
    quote,
    MAX_JSON_DEPTH,
    SNAPSHOT_RETENTION,
    ControlRequest,
    DirectiveStatus,
    DispatchRequest,
    DrainRequest,
    WireError,
    json_depth_exceeds,
    parse_ts,
    read_strict,
)
from cortex_node.swarm.coordinator import Coordinator
from cortex_node.swarm.state_sync import StateFull, check_state_key

COORDINATOR = web.AppKey("coordinator", Coordinator)
routes = web.RouteTableDef()


def _coord(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR]


def _node_id(request: web.Request) -> str:
    node_id = request.match_info["node_id"]
    if not _coord(request).has_node(node_id):
        raise ApiError(404, f"no node with id {quote(node_id)}; list them with GET /api/swarm/nodes")
    return node_id


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(_coord(request).health())


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


@routes.get("/api/swarm/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    c = _coord(request)
    return json_response({"selfId": c.node_id, "nodes": c.list_nodes()})


@routes.get("/api/swarm/nodes/metrics")
async def nodes_metrics(request: web.Request) -> web.Response:
    c = _coord(request)
    items = [
        {"nodeId": n.id, "name": n.name, "status": n.status, "lastHeartbeat": n.last_heartbeat, "metrics": n.metrics}
        for n in c.list_nodes() if n.status.is_live
    ]
    return json_response({"nodes": items})


@routes.get("/api/swarm/nodes/{node_id}")
async def get_node(request: web.Request) -> web.Response:
    return json_response(_coord(request).get_node(_node_id(request)))


@routes.get("/api/swarm/nodes/{node_id}/snapshots")
async def node_snapshots(request: web.Request) -> web.Response:
    node_id = _node_id(request)
    limit = query_int(request, "limit", SNAPSHOT_RETENTION, 1, SNAPSHOT_RETENTION)
    since_raw = request.query.get("since")
    since = None
    if since_raw:
        try:
            since = parse_ts(since_raw)
        except (ValueError, OverflowError):
            raise ApiError(400, f"query parameter 'since' must be an ISO 8601 timestamp such as "
                                f"2026-11-26T10:00:00Z; got {quote(since_raw)}") from None
    series = await _coord(request).node_series(node_id, limit, since)
    return json_response({"nodeId": node_id, "snapshots": series})


@routes.get("/api/swarm/nodes/{node_id}/events")
async def node_events(request: web.Request) -> web.Response:
    node_id = _node_id(request)
    limit = query_int(request, "limit", 50, 1, 200)
    events = await _coord(request).node_history(node_id, limit)
    return json_response({"nodeId": node_id, "events": events})


@routes.get("/api/swarm/report")
async def report(request: web.Request) -> web.Response:
    return json_response(await _coord(request).get_resource_report())


@routes.get("/api/swarm/topology")
async def topology(request: web.Request) -> web.Response:
    return json_response(_coord(request).get_topology())


@routes.get("/api/swarm/directives")
async def list_directives(request: web.Request) -> web.Response:
    status = query_enum(request, "status", DirectiveStatus)
    limit = query_int(request, "limit", 50, 1, 1000)
    return json_response({"directives": await _coord(request).list_directives(status, limit)})


@routes.post("/api/swarm/drain")
async def drain(request: web.Request) -> web.Response:
    return await _control(request, "drain", _coord(request).node_id)


@routes.post("/api/swarm/undrain")
async def undrain(request: web.Request) -> web.Response:
    return await _control(request, "undrain", _coord(request).node_id)


@routes.post("/api/swarm/seal")
async def seal(request: web.Request) -> web.Response:
    return await _control(request, "seal", _coord(request).node_id)


# --- directives ---------------------------------------------------------------------------------
@routes.post("/api/swarm/directives")
async def create_directive(request: web.Request) -> web.Response:
    try:
        dispatch = read_strict(DispatchRequest, await read_json_object(request))
    except WireError as exc:
        raise ApiError(400, str(exc)) from None
    c = _coord(request)
    status = 200 if dispatch.wait else 202
    if dispatch.group is not None:
        return json_response({"group": dispatch.group, "directives": await c.broadcast(dispatch)}, status=status)
    return json_response(await c.dispatch(dispatch), status=status)


@routes.get("/api/swarm/directives/{directive_id}")
async def get_directive(request: web.Request) -> web.Response:
    directive_id = request.match_info["directive_id"]
    row = await _coord(request).get_directive(directive_id)
    if row is None:
        raise ApiError(404, f"no directive with id {quote(directive_id)}")
    return json_response(row)


@routes.post("/api/swarm/directives/{directive_id}/cancel")
async def cancel_directive(request: web.Request) -> web.Response:
    directive_id = request.match_info["directive_id"]
    row = await _coord(request).cancel_directive(directive_id)
    if row is None:
        raise ApiError(404, f"no directive sent from this node with id {quote(directive_id)}")
    return json_response(row)


# --- forward_message inbox and sync_state -------------------------------------------------------
@routes.get("/api/swarm/messages")
async def list_messages(request: web.Request) -> web.Response:
    session_id = request.query.get("sessionId") or None
    limit = query_int(request, "limit", 100, 1, 1000)
    return json_response({"messages": await _coord(request).list_messages(session_id, limit)})


def _state_args(request: web.Request) -> tuple[str, str]:
    namespace, key = request.match_info["namespace"], request.match_info["key"]
    try:
        check_state_key(namespace, key)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return namespace, key


@routes.get("/api/swarm/state/{namespace}/{key}")
async def get_state(request: web.Request) -> web.Response:
    namespace, key = _state_args(request)
    entry = await _coord(request).get_state(namespace, key)
    if entry is None:
        raise ApiError(404, f"no key {quote(key)} in namespace {quote(namespace)}")
    return json_response(entry)


@routes.put("/api/swarm/state/{namespace}/{key}")
async def put_state(request: web.Request) -> web.Response:
    namespace, key = _state_args(request)
    body = await read_json_object(request)
    if set(body) != {"value"}:
        raise ApiError(400, "the body must be {\"value\": <any JSON>}")
    if json_depth_exceeds(body):
        raise ApiError(400, f"'value' nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        entry = await _coord(request).put_state(namespace, key, body["value"])
    except StateFull as exc:
        raise ApiError(409, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return json_response(entry)


# --- remote control, the change feed, Prometheus ------------------------------------------------
async def _control(request: web.Request, action: str, node_id: str) -> web.Response:
    """drain / undrain / seal of this node or, by id, of any peer (forwarded over A2A)."""
    body = await read_json_object(request, optional=True)
    try:  # only drain takes a deadline
        control = read_strict(DrainRequest if action == "drain" else ControlRequest, body)
    except WireError as exc:
        raise ApiError(400, str(exc)) from None
    reason, deadline = control.reason, getattr(control, "deadline_seconds", None)
    try:
        node = await _coord(request).control_node(node_id, action, reason, deadline)
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except PermissionError as exc:
        raise ApiError(409, str(exc)) from None
    except RuntimeError as exc:
        raise ApiError(502, str(exc)) from None
    return json_response(node, status=202 if action == "seal" else 200)


@routes.post("/api/swarm/nodes/{node_id}/drain")
async def drain_node(request: web.Request) -> web.Response:
    return await _control(request, "drain", request.match_info["node_id"])


@routes.post("/api/swarm/nodes/{node_id}/undrain")
async def undrain_node(request: web.Request) -> web.Response:
    return await _control(request, "undrain", request.match_info["node_id"])


@routes.post("/api/swarm/nodes/{node_id}/seal")
async def seal_node(request: web.Request) -> web.Response:
    return await _control(request, "seal", request.match_info["node_id"])


@routes.post("/api/swarm/nodes/{node_id}/forget")
async def forget_node(request: web.Request) -> web.Response:
    """Drop a peer and what this node keeps of it (series, usage, history); it is registered
    again if it beats again."""
    node_id = _node_id(request)
    try:
        await _coord(request).forget_node(node_id)
    except PermissionError as exc:
        raise ApiError(409, str(exc)) from None
    return json_response({"forgotten": node_id})


@routes.get("/api/swarm/events")
async def events_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``event: <kind>`` per change, a comment every 15 s to keep
    proxies from closing an idle stream."""
    c = _coord(request)
    sub = c.subscribe()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await resp.prepare(request)
    try:
        await resp.write(b": connected\n\n")
        while not c.shutdown_requested.is_set():
            try:
                event = await asyncio.wait_for(sub.queue.get(), 15.0)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            data = event["data"]
            if sub.dropped:  # this subscriber's own copy: every subscriber shares the event object
                data = {**data, "droppedBefore": sub.dropped}
                sub.dropped = 0
            await resp.write(f"id: {event['id']}\nevent: {event['kind']}\ndata: {json.dumps(data)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
    return resp


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    text = await prometheus_text(_coord(request))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
