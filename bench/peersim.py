"""Simulated peers for the idle benchmark: one process, ``peers`` fake cortex-nodes.

    python -m bench.peersim < spec.json
    spec: {"node_url", "peers", "interval_s", "duration_s", "processes"}

Each peer has its own listening port on 127.0.0.1 (its endpoint), serves an agent card with the
swarm extension, answers the node's SwarmHeartbeat with its own (empty) membership digest, and
sends the node a SwarmHeartbeat every ``interval_s``. First every peer joins at once (one
heartbeat each); after that the peers' beats are spread evenly over the interval. Runs for
``duration_s`` after the join, then prints what it sent and received as one JSON line and exits.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from bench.loadgen import heartbeat_params
from bench.procs import AUTH


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def simulate(spec: dict[str, Any]) -> dict[str, Any]:
    from cortex_node.swarm.membership import SWARM_EXTENSION_URI

    n = int(spec.get("peers", 100))
    interval = float(spec.get("interval_s", 30.0))
    duration = float(spec.get("duration_s", 60.0))
    node_rpc = spec["node_url"].rstrip("/") + "/a2a"
    received: Counter[str] = Counter()
    socks = [_bind() for _ in range(n)]
    run = str(int(time.time()) % 100000)
    peers = [{"id": f"node_sim{run}_{k:04d}", "name": f"sim-{k:04d}",
              "endpoint": f"http://127.0.0.1:{s.getsockname()[1]}", "processes": int(spec.get("processes", 2))}
             for k, s in enumerate(socks)]
    by_port = {s.getsockname()[1]: peers[k] for k, s in enumerate(socks)}

    def me(request: web.Request) -> dict[str, Any]:
        return by_port[request.transport.get_extra_info("sockname")[1]]

    async def card(request: web.Request) -> web.Response:
        peer = me(request)
        received["card"] += 1
        return web.json_response({
            "name": peer["name"], "description": "simulated peer", "version": "0.1.0",
            "supportedInterfaces": [{"url": peer["endpoint"] + "/a2a", "protocolBinding": "JSONRPC",
                                     "protocolVersion": "1.0"}],
            "capabilities": {"streaming": False, "extensions": [
                {"uri": SWARM_EXTENSION_URI, "params": {"nodeId": peer["id"], "group": "default", "tier": "root"}}]},
            "defaultInputModes": ["application/json"], "defaultOutputModes": ["application/json"], "skills": []})

    async def rpc(request: web.Request) -> web.Response:
        peer = me(request)
        doc = await request.json()
        method = doc.get("method")
        received[method or "?"] += 1
        if method == "SwarmHeartbeat":
            result: Any = {"nodeId": peer["id"], "members": []}
        elif method == "SwarmLeave":
            result = {"ok": True}
        else:
            return web.json_response({"jsonrpc": "2.0", "id": doc.get("id"),
                                      "error": {"code": -32601, "message": f"not simulated: {method}"}})
        return web.json_response({"jsonrpc": "2.0", "id": doc.get("id"), "result": result})

    app = web.Application()
    app.router.add_get("/.well-known/agent-card.json", card)
    app.router.add_post("/a2a", rpc)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    for s in socks:
        await web.SockSite(runner, s).start()

    sent: Counter[str] = Counter()
    seq = [1] * n
    seen: list[str | None] = [None] * n  # the node's digest version each peer holds, as Membership keeps it
    headers = {"A2A-Version": "1.0", "Content-Type": "application/json", **AUTH}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

        async def beat(k: int) -> None:
            params = heartbeat_params(peers[k], seq[k])
            params["digestVersion"] = seen[k]
            seq[k] += 1
            body = {"jsonrpc": "2.0", "id": f"{peers[k]['id']}-{seq[k]}", "method": "SwarmHeartbeat", "params": params}
            try:
                async with session.post(node_rpc, json=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    answer = await resp.json()
                result = answer.get("result") if isinstance(answer, dict) else None
                sent["ok" if resp.status == 200 and result is not None else "error"] += 1
                if isinstance(result, dict) and isinstance(result.get("digestVersion"), str):
                    seen[k] = result["digestVersion"]
                    if result.get("unchanged"):
                        sent["digest_unchanged"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                sent["failed"] += 1

        await asyncio.gather(*(beat(k) for k in range(n)))  # the join
        joined = time.monotonic()
        print(json.dumps({"joined": n}), flush=True)

        async def cadence(k: int) -> None:
            next_at = joined + (k + 1) * interval / n
            while True:
                now = time.monotonic()
                if next_at - joined > duration:
                    return
                await asyncio.sleep(max(0.0, next_at - now))
                await beat(k)
                next_at += interval

        await asyncio.gather(*(cadence(k) for k in range(n)))
    await runner.cleanup()
    return {"peers": n, "interval_s": interval, "sent": dict(sent), "received": dict(received)}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(asyncio.run(simulate(spec))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
