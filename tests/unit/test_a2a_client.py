"""The peer client against a real A2A server (and a few deliberately broken ones) on loopback."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from cortex_node.a2a.client import A2AClient, PeerUnreachable, jsonrpc_url, normalize_base_url
from cortex_node.a2a.errors import (
    InvalidAgentResponseError,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
)
from cortex_node.a2a.handler import AgentCardInfo
from cortex_node.a2a.server import A2AServer
from cortex_node.a2a.tasks import TaskHandle, TaskStore
from cortex_node.a2a.wire import ROLE_AGENT, ROLE_USER, TASK_STATE_COMPLETED, make_message, text_part
from cortex_node.clock import ManualClock

TOKEN = "s3cret-swarm-token"


class InstantHandler:
    """"reply" gets a message back; anything else a task that is complete before it is returned."""

    async def handle_message(self, message: dict, params: dict, tasks: TaskStore) -> dict | TaskHandle:
        text = message["parts"][0]["text"]
        if text == "reply":
            return make_message(ROLE_AGENT, [text_part("pong")])
        handle = tasks.create(context_id=message.get("contextId"), history=[message])
        handle.add_artifact([text_part(text.upper())])
        handle.finish(TASK_STATE_COMPLETED)
        return handle

    async def cancel_task(self, handle: TaskHandle) -> None:
        """Tasks here finish at once: there is never anything to stop."""

    async def load_task(self, task_id: str) -> dict | None:
        return None


def require_token(token: str) -> Callable:
    @web.middleware
    async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.path.startswith("/.well-known/") or request.headers.get("Authorization") == f"Bearer {token}":
            return await handler(request)
        return web.json_response({"error": "unauthorized"}, status=401)

    return auth


Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app on a free loopback port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def a2a_node(serve: Serve, token: str | None = None) -> str:
    address: dict[str, str] = {}

    def info() -> AgentCardInfo:  # called per card request: the URL is known only once the port is bound
        return AgentCardInfo(name="peer", description="a peer", version="0.1.0", base_url=address["base"],
                             skills=[{"id": "s", "name": "S", "description": "d", "tags": ["t"]}], extensions=[],
                             bearer_required=token is not None)

    app = web.Application(middlewares=[require_token(token)] if token else [])
    app.add_routes(A2AServer(InstantHandler(), info, ManualClock()).routes())
    address["base"] = await serve(app)
    return address["base"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("given, base", [
    ("http://h:4220", "http://h:4220"),
    ("http://h:4220/", "http://h:4220"),
    (" http://h:4220/a2a ", "http://h:4220"),
    ("http://h:4220/a2a/", "http://h:4220"),
    ("http://h:4220/.well-known/agent-card.json", "http://h:4220"),
    ("http://h:4220/.well-known/agent.json", "http://h:4220"),
    ("http://h:4220/prefix/a2a", "http://h:4220/prefix"),
    ("http://h:4220/xa2a", "http://h:4220/xa2a"),
])
def test_normalize_base_url(given, base):
    assert normalize_base_url(given) == base


def test_jsonrpc_url_takes_the_first_1_x_jsonrpc_interface():
    card = {"name": "n", "supportedInterfaces": [
        {"url": "http://h/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
        {"url": "http://h/old", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        {"url": "http://h/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": "http://h/later", "protocolBinding": "JSONRPC", "protocolVersion": "1.1"}]}
    assert jsonrpc_url(card) == "http://h/a2a"


@pytest.mark.parametrize("card", [{"name": "n"}, {"name": "n", "url": "http://h/a2a"},
                                  {"name": "n", "supportedInterfaces": [{"url": "http://h", "protocolBinding": "GRPC",
                                                                         "protocolVersion": "1.0"}]}])
def test_jsonrpc_url_needs_a_1_x_jsonrpc_interface(card):
    with pytest.raises(InvalidAgentResponseError, match=r"declares no JSONRPC interface with protocolVersion 1\.x"):
        jsonrpc_url(card)


async def test_fetch_card_from_any_form_of_the_url(serve, http):
    base = await a2a_node(serve)
    client = A2AClient(http)
    for url in (base, base + "/", base + "/a2a", base + "/.well-known/agent-card.json"):
        card = await client.fetch_card(url)
        assert card["name"] == "peer" and jsonrpc_url(card) == base + "/a2a"


async def test_calls_round_trip(serve, http):
    base = await a2a_node(serve)
    client = A2AClient(http)
    result = await client.send_message(base + "/a2a", make_message(ROLE_USER, [text_part("hi")], context_id="c"),
                                       configuration={"historyLength": 0}, metadata={"swarmKind": "execute_task"})
    task = result["task"]
    assert task["status"]["state"] == TASK_STATE_COMPLETED and task["artifacts"][0]["parts"] == [{"text": "HI"}]
    assert "history" not in task and task["contextId"] == "c"
    reply = await client.send_message(base + "/a2a", make_message(ROLE_USER, [text_part("reply")]))
    assert reply["message"]["parts"] == [{"text": "pong"}]
    fetched = await client.get_task(base + "/a2a", task["id"], history_length=1)
    assert fetched["id"] == task["id"] and len(fetched["history"]) == 1
    assert await client.call(base + "/a2a", "ListTasks", {}, timeout=5) == {
        "tasks": [{k: v for k, v in fetched.items() if k != "artifacts"}], "nextPageToken": "", "pageSize": 50,
        "totalSize": 1}


async def test_jsonrpc_errors_arrive_typed(serve, http):
    url = await a2a_node(serve) + "/a2a"
    client = A2AClient(http)
    with pytest.raises(TaskNotFoundError, match="'nope'"):
        await client.get_task(url, "nope")
    done = (await client.send_message(url, make_message(ROLE_USER, [text_part("x")])))["task"]
    with pytest.raises(TaskNotCancelableError) as caught:
        await client.cancel_task(url, done["id"])
    assert caught.value.code == -32002
    with pytest.raises(InvalidParamsError, match=r"params\.message\.parts"):
        await client.send_message(url, {"messageId": "m", "role": ROLE_USER, "parts": []})


async def test_bearer_token_is_sent_and_never_shown(serve, http):
    base = await a2a_node(serve, token=TOKEN)
    card = await A2AClient(http).fetch_card(base)  # the card is public
    assert card["securitySchemes"] == {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}}
    good = A2AClient(http, token=TOKEN)
    assert "task" in await good.send_message(base + "/a2a", make_message(ROLE_USER, [text_part("x")]))
    for client in (A2AClient(http), A2AClient(http, token="wrong-" + TOKEN)):
        with pytest.raises(PeerUnreachable) as caught:
            await client.get_task(base + "/a2a", "t")
        message = str(caught.value)
        assert f"GetTask to {base}/a2a: HTTP 401" in message and "token is missing or wrong" in message
        assert TOKEN not in message and TOKEN not in repr(caught.value.__cause__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_names_the_url(http):
    url = f"http://127.0.0.1:{free_port()}"
    client = A2AClient(http, token=TOKEN)
    with pytest.raises(PeerUnreachable, match=re.escape(f"GetTask to {url}/a2a failed: ")) as caught:
        await client.get_task(url + "/a2a", "t")
    assert TOKEN not in str(caught.value)
    with pytest.raises(PeerUnreachable,
                       match=re.escape(f"fetching the agent card from {url}/.well-known/agent-card.json failed")):
        await client.fetch_card(url)


async def test_a_silent_peer_times_out(serve, http):
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/a2a", hang)
    base = await serve(app)
    try:
        with pytest.raises(PeerUnreachable, match=re.escape(f"CancelTask to {base}/a2a: no answer within 0.2 s")):
            await A2AClient(http).cancel_task(base + "/a2a", "t", timeout=0.2)
    finally:
        release.set()


async def test_a_missing_card_is_an_http_error(serve, http):
    base = await serve(web.Application())
    expected = f"agent card from {base}/.well-known/agent-card.json: HTTP 404"
    with pytest.raises(PeerUnreachable, match=re.escape(expected)):
        await A2AClient(http).fetch_card(base + "/a2a")


@pytest.mark.parametrize("body, complaint", [
    (b"<html>", "is not valid JSON"),
    (b"[1]", "not its JSON-RPC response"),
    (b'{"jsonrpc":"2.0","id":"someone-else","result":{}}', "not its JSON-RPC response"),
])
async def test_a_peer_answering_nonsense(serve, http, body, complaint):
    async def nonsense(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/a2a", nonsense)
    base = await serve(app)
    with pytest.raises(InvalidAgentResponseError, match=complaint):
        await A2AClient(http).call(base + "/a2a", "GetTask", {"id": "t"}, timeout=5)


async def test_a_card_that_is_not_an_object(serve, http):
    async def listed(request: web.Request) -> web.Response:
        return web.json_response([{"name": "peer"}])

    app = web.Application()
    app.router.add_get("/.well-known/agent-card.json", listed)
    base = await serve(app)
    with pytest.raises(InvalidAgentResponseError, match=r"agent-card\.json is not a JSON object"):
        await A2AClient(http).fetch_card(base)


async def test_a_result_of_the_wrong_shape_is_flagged(serve, http):
    async def echo_id(request: web.Request) -> web.Response:
        rpc = await request.json()
        assert request.headers["A2A-Version"] == "1.0"
        return web.json_response({"jsonrpc": "2.0", "id": rpc["id"], "result": {"unexpected": True}})

    app = web.Application()
    app.router.add_post("/a2a", echo_id)
    url = await serve(app) + "/a2a"
    client = A2AClient(http)
    with pytest.raises(InvalidAgentResponseError, match="neither a task nor a message"):
        await client.send_message(url, make_message(ROLE_USER, [text_part("x")]))
    with pytest.raises(InvalidAgentResponseError, match="GetTask with something that is not a Task"):
        await client.get_task(url, "t")
