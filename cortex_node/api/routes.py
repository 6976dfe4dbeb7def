"""The node's REST API (camelCase JSON). Every route is described in api/openapi.py."""

from __future__ import annotations

from aiohttp import web

from cortex_node.contracts import SNAPSHOT_RETENTION, SWARM_VERSION, DirectiveStatus, parse_ts
from cortex_node.api.http import ApiError, json_response, query_enum, query_int, read_json_object
from cortex_node.api.openapi import openapi_document
from cortex_node.swarm.coordinator import ONLINE_STATUSES, Coordinator
from cortex_node.swarm.node_registry import UnknownNode

COORDINATOR = web.AppKey("coordinator", Coordinator)
routes = web.RouteTableDef()


def _coord(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR]


def _node_id(request: web.Request) -> str:
    node_id = request.match_info["node_id"]
    if node_id not in _coord(request).registry.nodes:
        raise ApiError(404, f"no node with id {node_id!r}; list them with GET /api/swarm/nodes")
    return node_id


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    c = _coord(request)
    me = c.registry.get(c.node_id)
    return json_response({
        "ok": True, "nodeId": c.node_id, "name": me.name, "status": me.status.value,
        "version": SWARM_VERSION, "uptimeSeconds": round((c.clock.now_ms() - c.started_at_ms) / 1000, 1),
    })


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
        for n in c.list_nodes() if n.status in ONLINE_STATUSES
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
                                f"2026-11-26T10:00:00Z; got {since_raw!r}") from None
    series = await _coord(request).registry.snapshots.series(node_id, limit, since)
    return json_response({"nodeId": node_id, "snapshots": series})


@routes.get("/api/swarm/nodes/{node_id}/events")
async def node_events(request: web.Request) -> web.Response:
    node_id = _node_id(request)
    limit = query_int(request, "limit", 50, 1, 200)
    events = await _coord(request).registry.events.list(node_id, limit)
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


async def _control(request: web.Request, action: str) -> web.Response:
    body = await read_json_object(request, optional=True)
    reason = body.get("reason", "operator")
    if not isinstance(reason, str) or len(reason) > 200:
        raise ApiError(400, "'reason' must be a string of at most 200 characters")
    c = _coord(request)
    try:
        node = await getattr(c, action)(reason)
    except RuntimeError as exc:
        raise ApiError(409, str(exc)) from None
    except UnknownNode:  # pragma: no cover - the local node is always registered
        raise ApiError(404, "the local node is not registered") from None
    return json_response(node, status=202 if action == "seal" else 200)


@routes.post("/api/swarm/drain")
async def drain(request: web.Request) -> web.Response:
    return await _control(request, "drain")


@routes.post("/api/swarm/undrain")
async def undrain(request: web.Request) -> web.Response:
    return await _control(request, "undrain")


@routes.post("/api/swarm/seal")
async def seal(request: web.Request) -> web.Response:
    return await _control(request, "seal")
