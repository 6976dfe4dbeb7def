"""Reference servers for the A2A intake benchmark, each run as its own process:

``sdk``      the official a2a-sdk server classes (DefaultRequestHandler, create_jsonrpc_routes,
             Starlette) with a trivial echo executor, served by uvicorn with one worker;
``aiohttp``  a bare aiohttp handler that parses the JSON-RPC body and returns a fixed Task:
             the ceiling of the HTTP stack the node is built on.

    python -m bench.refservers sdk|aiohttp --port-file PATH

The server binds 127.0.0.1 on a free port, writes the port to PATH and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

FIXED_TASK = {
    "id": "task-fixed", "contextId": "ctx-fixed",
    "status": {"state": "TASK_STATE_COMPLETED", "timestamp": "2026-01-01T00:00:00.000Z"},
    "artifacts": [{"artifactId": "a1", "name": "echo", "parts": [{"text": "ok"}]}],
}


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _announce(sock: socket.socket, port_file: Path, **extra: str) -> None:
    tmp = port_file.with_suffix(".tmp")
    loop = type(asyncio.get_running_loop())
    tmp.write_text(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid(),
                               "loop": f"{loop.__module__}.{loop.__name__}", **extra}))
    tmp.replace(port_file)


def _event_loop_factory():
    """The node's choice (cortex_node.cli.node): uvloop when installed, else asyncio's own loop.
    The ceiling must run on the same loop as the node, or it is not the node's ceiling."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


# --- (c) bare aiohttp ------------------------------------------------------------------------------
async def serve_aiohttp(port_file: Path) -> None:
    from aiohttp import web

    async def rpc(request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        body = json.dumps({"jsonrpc": "2.0", "id": doc.get("id"), "result": {"task": FIXED_TASK}},
                          separators=(",", ":")).encode()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/a2a", rpc)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = _bind()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _announce(sock, port_file)
    await stop.wait()
    await runner.cleanup()


# --- (b) the official a2a-sdk server with an echo executor ------------------------------------------
def build_sdk_app(base_url: str):
    from a2a.helpers.proto_helpers import get_message_text, new_task, new_text_part
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events.event_queue_v2 import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
    from starlette.applications import Starlette

    class EchoExecutor(AgentExecutor):
        """Answers every message with a completed task whose artifact echoes the text."""

        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            if context.current_task is None:
                await event_queue.enqueue_event(new_task(context.task_id, context.context_id,
                                                         TaskState.TASK_STATE_SUBMITTED, history=[context.message]))
            updater = TaskUpdater(event_queue, context.task_id, context.context_id)
            text = get_message_text(context.message) if context.message else ""
            await updater.add_artifact([new_text_part(text or "ok")], name="echo")
            await updater.complete()

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()

    card = AgentCard(
        name="echo", description="a2a-sdk echo reference", version="1.0.0",
        supported_interfaces=[AgentInterface(url=base_url + "/a2a", protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain", "application/json"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echoes", tags=["echo"])],
    )
    handler = DefaultRequestHandler(agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(handler, "/a2a")
    return Starlette(routes=routes)


def serve_sdk(port_file: Path) -> None:
    import uvicorn

    sock = _bind()
    port = sock.getsockname()[1]
    app = build_sdk_app(f"http://127.0.0.1:{port}")
    # one worker and uvicorn's defaults: the event loop and HTTP parser it picks itself ("auto":
    # uvloop and httptools when they are installed)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", workers=1,
                            loop="auto", http="auto")
    config.load()
    server = uvicorn.Server(config)
    http = getattr(config.http_protocol_class, "__module__", "?")

    async def main() -> None:
        _announce(sock, port_file, http=http)
        await server.serve(sockets=[sock])

    factory = config.get_loop_factory() if hasattr(config, "get_loop_factory") else None
    if factory is None:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.refservers")
    parser.add_argument("kind", choices=("sdk", "aiohttp"))
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.kind == "aiohttp":
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(serve_aiohttp(args.port_file))
    else:
        serve_sdk(args.port_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
