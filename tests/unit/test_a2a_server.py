"""The A2A JSON-RPC server on a real loopback socket: the card, the envelope rules, every method
and both SSE streams, driven by a small echo handler defined here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cortex_node.a2a.handler import AgentCardInfo
from cortex_node.a2a.server import A2AServer, build_agent_card
from cortex_node.a2a.tasks import TaskHandle, TaskStore
from cortex_node.a2a.wire import (
    ROLE_AGENT,
    TASK_STATE_CANCELED,
    TASK_STATE_COMPLETED,
    TASK_STATE_SUBMITTED,
    TASK_STATE_WORKING,
    make_message,
    text_part,
)
from cortex_node.clock import ManualClock

STORED_TASK = {"id": "from-disk", "contextId": "ctx-old",
               "status": {"state": TASK_STATE_COMPLETED, "timestamp": "2026-01-01T00:00:00.000Z"},
               "history": [{"messageId": f"old{i}", "role": "ROLE_USER", "parts": [{"text": str(i)}]}
                           for i in range(3)]}


class EchoHandler:
    """By the first text part: "reply" answers with a message; "wait" works until cancelled;
    "crash" raises; "bad reply" returns a broken message; anything else is echoed as an artifact."""

    def __init__(self) -> None:
        self.work: set[asyncio.Task] = set()
        self.cancelled: list[str] = []

    async def handle_message(self, message: dict, params: dict, tasks: TaskStore) -> dict | TaskHandle:
        text = message["parts"][0].get("text", "")
        if text == "reply":
            return make_message(ROLE_AGENT, [text_part("hello back")])
        if text == "crash":
            raise RuntimeError("secret internal detail")
        if text == "bad reply":
            return {"role": ROLE_AGENT, "parts": []}
        handle = tasks.create(context_id=message.get("contextId"), history=[message])
        work = asyncio.create_task(self._run(handle, text))
        self.work.add(work)
        work.add_done_callback(self.work.discard)
        return handle

    async def _run(self, handle: TaskHandle, text: str) -> None:
        handle.set_working()
        if text == "wait":
            await handle.cancel_requested.wait()
            return  # the server marks it CANCELED
        handle.add_artifact([text_part(f"echo: {text}")], name="echo")
        handle.finish(TASK_STATE_COMPLETED)

    async def cancel_task(self, handle: TaskHandle) -> None:
        self.cancelled.append(handle.task_id)

    async def load_task(self, task_id: str) -> dict | None:
        return STORED_TASK if task_id == STORED_TASK["id"] else None

    def extension_methods(self) -> dict:
        async def echo(params: dict) -> Any:
            return {"echoed": params}

        async def strict(params: dict) -> Any:
            raise ValueError("params.beats must be a positive integer")

        return {"SwarmEcho": echo, "SwarmStrict": strict}


def card_info(base_url: str, bearer: bool = False) -> AgentCardInfo:
    return AgentCardInfo(
        name="test-node", description="An A2A test node", version="0.1.0", base_url=base_url,
        skills=[{"id": "echo", "name": "Echo", "description": "Echoes text", "tags": ["test"]}],
        extensions=[{"uri": "https://cortex-swarm.dev/ext/swarm/v1", "description": "swarm heartbeat"}],
        bearer_required=bearer)


@dataclass
class Node:
    base_url: str
    rpc_url: str
    server: A2AServer
    handler: EchoHandler
    http: aiohttp.ClientSession

    async def rpc(self, method: str, params: Any = None, *, rpc_id: Any = 1, version: str | None = "1.0") -> dict:
        body = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            body["params"] = params
        return await self.post(json.dumps(body).encode(), version=version)

    async def post(self, raw: bytes, version: str | None = "1.0") -> dict:
        headers = {"Content-Type": "application/json"}
        if version is not None:
            headers["A2A-Version"] = version
        async with self.http.post(self.rpc_url, data=raw, headers=headers) as response:
            assert response.status == 200  # JSON-RPC answers are always HTTP 200
            assert response.content_type == "application/json"
            return await response.json()

    @asynccontextmanager
    async def stream(self, method: str, params: dict, rpc_id: Any = "s-1") -> AsyncIterator[aiohttp.ClientResponse]:
        body = {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}
        async with self.http.post(self.rpc_url, json=body,
                                  headers={"A2A-Version": "1.0", "Accept": "text/event-stream"}) as response:
            assert response.status == 200
            yield response


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict]]:
    """(event name, JSON data) per server-sent event, as they arrive."""
    name, data = "message", []
    async for raw_line in response.content:
        line = raw_line.decode().rstrip("\r\n")
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    handler = EchoHandler()
    address: dict[str, str] = {}
    server = A2AServer(handler, lambda: card_info(address["base"]), ManualClock(),
                       extension_methods=handler.extension_methods())
    app = web.Application()
    app.add_routes(server.routes())
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    address["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as http:
        yield Node(address["base"], address["base"] + "/a2a", server, handler, http)
    for work in list(handler.work):
        work.cancel()
    await runner.cleanup()


def user_message(text: str, **fields: Any) -> dict:
    return make_message("ROLE_USER", [text_part(text)], **fields)


def assert_error(answer: dict, code: int, rpc_id: Any = 1, says: str = "") -> dict:
    assert set(answer) == {"jsonrpc", "id", "error"} and answer["jsonrpc"] == "2.0"
    assert answer["id"] == rpc_id
    error = answer["error"]
    assert error["code"] == code, error
    assert says in error["message"]
    if code in (-32700, -32601):
        assert "data" not in error
    else:
        (info,) = error["data"]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["domain"] == "a2a-protocol.org"
        assert info["metadata"] == {} and info["reason"]
    return error


async def wait_for_state(node: Node, task_id: str, state: str) -> None:
    handle = node.server.tasks.get(task_id)
    subscription = handle.subscribe()
    try:
        if handle.state != state:
            async for event in subscription:
                if event.get("statusUpdate", {}).get("status", {}).get("state") == state:
                    break
    finally:
        subscription.close()


# --- agent card ----------------------------------------------------------------------------------
async def test_card_is_the_a2a_1_0_shape(node):
    async with node.http.get(node.base_url + "/.well-known/agent-card.json") as response:
        assert response.status == 200 and response.content_type == "application/json"
        card = await response.json()
        etag = response.headers["ETag"]
    assert etag.startswith('W/"')
    assert card["supportedInterfaces"] == [
        {"url": node.rpc_url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]
    assert card["capabilities"] == {"streaming": True, "pushNotifications": False, "extensions": [
        {"uri": "https://cortex-swarm.dev/ext/swarm/v1", "description": "swarm heartbeat"}]}
    assert card["defaultInputModes"] == card["defaultOutputModes"] == ["text/plain", "application/json"]
    assert card["skills"][0]["tags"] == ["test"]
    assert (card["name"], card["description"], card["version"]) == ("test-node", "An A2A test node", "0.1.0")
    assert card["provider"] == {"organization": "Cortex Swarm", "url": node.base_url}
    for legacy in ("url", "protocolVersion", "preferredTransport", "additionalInterfaces", "security",
                   "securitySchemes", "supportsAuthenticatedExtendedCard"):
        assert legacy not in card


async def test_card_answers_304_to_its_etag_and_has_the_old_alias(node):
    async with node.http.get(node.base_url + "/.well-known/agent-card.json") as response:
        etag, card = response.headers["ETag"], await response.json()
    for header in (etag, etag.removeprefix("W/"), f'"other", {etag}', "*"):
        async with node.http.get(node.base_url + "/.well-known/agent-card.json",
                                 headers={"If-None-Match": header}) as response:
            assert response.status == 304 and response.headers["ETag"] == etag
    async with node.http.get(node.base_url + "/.well-known/agent-card.json",
                             headers={"If-None-Match": 'W/"stale"'}) as response:
        assert response.status == 200
    async with node.http.get(node.base_url + "/.well-known/agent.json") as response:
        assert response.status == 200 and await response.json() == card


def test_card_declares_bearer_auth_in_the_1_0_form():
    card = build_agent_card(card_info("http://10.0.0.5:4220/", bearer=True))
    assert card["securitySchemes"] == {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}}
    assert card["securityRequirements"] == [{"schemes": {"bearer": {"list": []}}}]
    assert card["supportedInterfaces"][0]["url"] == "http://10.0.0.5:4220/a2a"


def test_card_without_extensions_leaves_the_key_out():
    info = card_info("http://h:1")
    info.extensions = []
    assert "extensions" not in build_agent_card(info)["capabilities"]


# --- envelope errors: each with its code, its id and HTTP 200 -------------------------------------
@pytest.mark.parametrize("raw, code, says", [
    (b"{not json", -32700, "Invalid JSON payload"),
    (b"", -32700, "Invalid JSON payload"),
    (b"\xff\xfe\x00garbage", -32700, "Invalid JSON payload"),
    (b"[" * 10_000 + b"]" * 10_000, -32700, "nested too deeply"),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, -32700, "nested too deeply"),
    (b"[]", -32600, "Batch requests are not supported"),
    (b'[{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}]', -32600, "Batch"),
    (b'"GetTask"', -32600, "must be a JSON-RPC object"),
    (b'{"jsonrpc":"2.0","id":true,"method":"GetTask"}', -32600, "id must be a string, integer, or null"),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"GetTask"}', -32600, "id must be a string, integer, or null"),
    (b'{"jsonrpc":"2.0","id":{"n":1},"method":"GetTask"}', -32600, "id must be"),
])
async def test_envelope_errors_without_a_usable_id(node, raw, code, says):
    assert_error(await node.post(raw), code, rpc_id=None, says=says)


@pytest.mark.parametrize("body, code, says", [
    ({"jsonrpc": "1.0", "id": 7, "method": "GetTask", "params": {"id": "x"}}, -32600, "'jsonrpc' must be exactly"),
    ({"id": 7, "method": "GetTask"}, -32600, "'jsonrpc' must be exactly '2.0'"),
    ({"jsonrpc": "2.0", "id": 7}, -32600, "'method' is required"),
    ({"jsonrpc": "2.0", "id": 7, "method": 5}, -32600, "'method' is required"),
    ({"jsonrpc": "2.0", "id": 7, "method": "message/send", "params": {}}, -32601, "'message/send'"),
    ({"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": ["x"]}, -32602, "params must be an object"),
    ({"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": None}, -32602, "params must be an object"),
])
async def test_envelope_errors_echo_the_id(node, body, code, says):
    assert_error(await node.post(json.dumps(body).encode()), code, rpc_id=7, says=says)


@pytest.mark.parametrize("rpc_id", ["abc", 0, -5, None, 2**40])
async def test_any_valid_id_is_echoed(node, rpc_id):
    assert_error(await node.rpc("GetTask", {"id": "nope"}, rpc_id=rpc_id), -32001, rpc_id=rpc_id)


@pytest.mark.parametrize("version", [None, "", " ", "0.3", "0.3.0", "2.0", "10", "1.x", "one"])
async def test_version_other_than_1_x_is_refused(node, version):
    shown = "0.3" if version is None or not version.strip() else version
    assert_error(await node.rpc("GetTask", {"id": "t"}, version=version), -32009, says=f"A2A version '{shown}'")


@pytest.mark.parametrize("version", ["1.0", "1.1", "1", "1.0.3"])
async def test_any_1_x_version_is_accepted(node, version):
    assert_error(await node.rpc("GetTask", {"id": "nope"}, version=version), -32001)


async def test_version_is_checked_after_the_method_lookup(node):
    assert_error(await node.rpc("NoSuchMethod", {}, version=None), -32601)


async def test_version_never_comes_from_the_query_string(node):
    """A web page can write any query string but cannot set a header without a CORS preflight."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "nope"}}
    async with node.http.post(node.rpc_url, json=body, params={"A2A-Version": "1.0"}) as response:
        assert_error(await response.json(), -32009)


async def test_internal_error_is_logged_never_sent(node, caplog):
    answer = await node.rpc("SendMessage", {"message": user_message("crash")})
    error = assert_error(answer, -32603)
    assert "secret" not in json.dumps(answer) and "Traceback" not in json.dumps(answer)
    assert "see the agent's log" in error["message"]
    assert "secret internal detail" in caplog.text


async def test_a_handler_returning_a_broken_message_is_an_internal_error(node, caplog):
    assert_error(await node.rpc("SendMessage", {"message": user_message("bad reply")}), -32603)
    assert "handle_message returned an invalid message" in caplog.text


# --- SendMessage ---------------------------------------------------------------------------------
async def test_send_message_blocks_until_the_task_is_terminal(node):
    message = user_message("hi", context_id="ctx-1")
    answer = await node.rpc("SendMessage", {"message": message, "configuration": {}}, rpc_id="req-1")
    assert answer["id"] == "req-1" and set(answer) == {"jsonrpc", "id", "result"}
    task = answer["result"]["task"]
    assert task["status"]["state"] == TASK_STATE_COMPLETED and task["status"]["timestamp"].endswith("Z")
    assert task["contextId"] == "ctx-1"
    assert task["artifacts"][0]["parts"] == [{"text": "echo: hi"}] and task["artifacts"][0]["artifactId"]
    assert task["history"] == [{**message, "taskId": task["id"], "contextId": "ctx-1"}]
    assert "kind" not in json.dumps(answer)


async def test_send_message_return_immediately_and_history_length(node):
    answer = await node.rpc("SendMessage", {"message": user_message("wait"),
                                            "configuration": {"returnImmediately": True, "historyLength": 0}})
    task = answer["result"]["task"]
    assert task["status"]["state"] in (TASK_STATE_SUBMITTED, TASK_STATE_WORKING)
    assert "history" not in task
    cancelled = (await node.rpc("CancelTask", {"id": task["id"]}))["result"]
    assert cancelled["status"]["state"] == TASK_STATE_CANCELED


async def test_send_message_with_a_direct_reply(node):
    answer = await node.rpc("SendMessage", {"message": user_message("reply", context_id="ctx-r")})
    reply = answer["result"]["message"]
    assert reply["role"] == "ROLE_AGENT" and reply["parts"] == [{"text": "hello back"}]
    assert reply["contextId"] == "ctx-r"  # the conversation's context is echoed
    assert "task" not in answer["result"]


@pytest.mark.parametrize("params, says", [
    ({}, "params.message is required and must be an object"),
    ({"message": {"role": "ROLE_USER", "parts": [{"text": "x"}]}}, "params.message.messageId is required"),
    ({"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}}, "params.message.parts is required"),
    ({"message": {"messageId": "m", "role": "user", "parts": [{"text": "x"}]}}, "params.message.role must be one of"),
    ({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"kind": "file", "file": {"uri": "u"}}]}},
     "0.3 'kind'/'file' parts are not A2A 1.0"),
    ({"message": user_message("x"), "configuration": []}, "params.configuration must be an object"),
    ({"message": user_message("x"), "configuration": {"historyLength": -1}},
     "params.configuration.historyLength must be an integer of at least 0"),
    ({"message": user_message("x"), "configuration": {"returnImmediately": "yes"}},
     "params.configuration.returnImmediately must be true or false"),
    ({"message": user_message("x"), "metadata": "x"}, "params.metadata must be an object"),
])
async def test_send_message_bad_params(node, params, says):
    assert_error(await node.rpc("SendMessage", params), -32602, says=says)


async def test_send_message_to_an_unknown_or_finished_task(node):
    assert_error(await node.rpc("SendMessage", {"message": user_message("x", task_id="nope")}), -32001,
                 says="'nope'")
    done = (await node.rpc("SendMessage", {"message": user_message("x")}))["result"]["task"]
    assert_error(await node.rpc("SendMessage", {"message": user_message("more", task_id=done["id"])}), -32004,
                 says="already TASK_STATE_COMPLETED")
    assert_error(await node.rpc("SendMessage", {"message": user_message("more", task_id="from-disk")}), -32004,
                 says="no longer running")


async def test_send_message_with_push_config_is_refused(node):
    params = {"message": user_message("x"), "configuration": {"taskPushNotificationConfig": {"url": "http://h"}}}
    assert_error(await node.rpc("SendMessage", params), -32003)


async def test_history_length_may_be_a_protojson_string(node):
    params = {"message": user_message("x"), "configuration": {"historyLength": "0"}}
    assert "history" not in (await node.rpc("SendMessage", params))["result"]["task"]


# --- GetTask, ListTasks, CancelTask -----------------------------------------------------------------
async def test_get_task_from_memory_and_from_the_handler(node):
    task = (await node.rpc("SendMessage", {"message": user_message("x")}))["result"]["task"]
    assert (await node.rpc("GetTask", {"id": task["id"]}))["result"] == task
    assert "history" not in (await node.rpc("GetTask", {"id": task["id"], "historyLength": 0}))["result"]
    stored = (await node.rpc("GetTask", {"id": "from-disk", "historyLength": 2}))["result"]
    assert [m["messageId"] for m in stored["history"]] == ["old1", "old2"]
    assert_error(await node.rpc("GetTask", {"id": "nope"}), -32001, says="Task not found: 'nope'")


@pytest.mark.parametrize("params, says", [
    ({}, "params.id is required and must be a non-empty string"),
    ({"id": 5}, "params.id is required"),
    ({"id": "x", "historyLength": -1}, "params.historyLength must be an integer of at least 0"),
    ({"id": "x", "historyLength": True}, "params.historyLength must be an integer"),
])
async def test_get_task_bad_params(node, params, says):
    assert_error(await node.rpc("GetTask", params), -32602, says=says)


async def test_list_tasks(node):
    for text in ("a", "b", "c"):
        await node.rpc("SendMessage", {"message": user_message(text, context_id="ctx-list")})
    await node.rpc("SendMessage", {"message": user_message("other", context_id="ctx-other")})
    result = (await node.rpc("ListTasks", {"contextId": "ctx-list", "pageSize": 2}))["result"]
    assert set(result) == {"tasks", "nextPageToken", "pageSize", "totalSize"}
    assert (len(result["tasks"]), result["pageSize"], result["totalSize"]) == (2, 2, 3)
    assert all("artifacts" not in t for t in result["tasks"])  # only on request, as in the SDK
    rest = (await node.rpc("ListTasks", {"contextId": "ctx-list", "pageSize": 2,
                                         "pageToken": result["nextPageToken"], "includeArtifacts": True}))["result"]
    assert len(rest["tasks"]) == 1 and rest["nextPageToken"] == "" and rest["tasks"][0]["artifacts"]
    assert {t["id"] for t in result["tasks"] + rest["tasks"]} == {
        t.task_id for t in node.server.tasks.list(context_id="ctx-list").tasks}

    everything = (await node.rpc("ListTasks", {}))["result"]
    assert (everything["pageSize"], everything["totalSize"], everything["nextPageToken"]) == (50, 4, "")
    completed = (await node.rpc("ListTasks", {"status": TASK_STATE_COMPLETED, "historyLength": 0}))["result"]
    assert completed["totalSize"] == 4 and all("history" not in t for t in completed["tasks"])
    assert (await node.rpc("ListTasks", {"status": TASK_STATE_WORKING}))["result"]["tasks"] == []
    assert (await node.rpc("ListTasks", {"status": "TASK_STATE_UNSPECIFIED"}))["result"]["totalSize"] == 4
    after = (await node.rpc("ListTasks", {"statusTimestampAfter": "2100-01-01T00:00:00Z"}))["result"]
    assert after == {"tasks": [], "nextPageToken": "", "pageSize": 50, "totalSize": 0}


@pytest.mark.parametrize("params, says", [
    ({"pageSize": 101}, "params.pageSize must be from 1 to 100"),
    ({"pageSize": -1}, "params.pageSize must be an integer of at least 0"),
    ({"pageToken": "forged"}, "params.pageToken is not valid"),
    ({"status": "completed"}, "params.status must be one of"),
    ({"status": ["TASK_STATE_WORKING"]}, "params.status must be a string"),
    ({"contextId": 3}, "params.contextId must be a string"),
    ({"statusTimestampAfter": "yesterday"}, "params.statusTimestampAfter must be an RFC 3339 timestamp"),
    ({"includeArtifacts": 1}, "params.includeArtifacts must be true or false"),
])
async def test_list_tasks_bad_params(node, params, says):
    assert_error(await node.rpc("ListTasks", params), -32602, says=says)


async def test_cancel_task(node):
    task = (await node.rpc("SendMessage", {"message": user_message("wait"),
                                           "configuration": {"returnImmediately": True}}))["result"]["task"]
    await wait_for_state(node, task["id"], TASK_STATE_WORKING)
    cancelled = (await node.rpc("CancelTask", {"id": task["id"]}))["result"]
    assert cancelled["id"] == task["id"] and cancelled["status"]["state"] == TASK_STATE_CANCELED
    assert node.handler.cancelled == [task["id"]]
    assert node.server.tasks.get(task["id"]).cancel_requested.is_set()
    assert_error(await node.rpc("CancelTask", {"id": task["id"]}), -32002, says="already TASK_STATE_CANCELED")
    assert_error(await node.rpc("CancelTask", {"id": "from-disk"}), -32002, says="TASK_STATE_COMPLETED")
    assert_error(await node.rpc("CancelTask", {"id": "nope"}), -32001)
    assert_error(await node.rpc("CancelTask", {}), -32602, says="params.id is required")


# --- methods this agent does not offer, and extension methods -------------------------------------
@pytest.mark.parametrize("method", ["CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig",
                                    "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig"])
async def test_push_notification_methods(node, method):
    assert_error(await node.rpc(method, {"taskId": "t", "id": "c"}), -32003, says="pushNotifications is false")


async def test_extended_card_is_not_offered(node):
    assert_error(await node.rpc("GetExtendedAgentCard", {}), -32004)


async def test_extension_methods(node):
    assert (await node.rpc("SwarmEcho", {"beat": 1}))["result"] == {"echoed": {"beat": 1}}
    assert_error(await node.rpc("SwarmStrict", {}), -32602, says="params.beats must be a positive integer")
    assert_error(await node.rpc("SwarmEcho", {}, version=None), -32009)


def test_extension_methods_may_not_shadow_a2a_methods():
    with pytest.raises(ValueError, match="may not replace A2A methods: GetTask"):
        A2AServer(EchoHandler(), lambda: card_info("http://h"), ManualClock(), extension_methods={"GetTask": None})


# --- SSE -----------------------------------------------------------------------------------------
async def test_send_streaming_message(node):
    async with node.stream("SendStreamingMessage", {"message": user_message("hi")}) as response:
        assert response.content_type == "text/event-stream"
        events = [event async for event in sse_events(response)]
    assert all(name == "message" for name, _ in events)
    assert all(set(e) == {"jsonrpc", "id", "result"} and e["id"] == "s-1" for _, e in events)
    results = [e["result"] for _, e in events]
    assert [next(iter(r)) for r in results] == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]
    task = results[0]["task"]
    assert task["status"]["state"] == TASK_STATE_SUBMITTED
    for update in results[1:]:
        body = next(iter(update.values()))
        assert (body["taskId"], body["contextId"]) == (task["id"], task["contextId"])
    assert results[1]["statusUpdate"]["status"]["state"] == TASK_STATE_WORKING
    assert results[2]["artifactUpdate"]["artifact"]["parts"] == [{"text": "echo: hi"}]
    assert results[3]["statusUpdate"]["status"]["state"] == TASK_STATE_COMPLETED
    assert "final" not in json.dumps(events) and "kind" not in json.dumps(events)


async def test_streaming_a_direct_reply_is_one_message_event(node):
    async with node.stream("SendStreamingMessage", {"message": user_message("reply")}) as response:
        events = [event async for event in sse_events(response)]
    assert [e["result"]["message"]["parts"] for _, e in events] == [[{"text": "hello back"}]]


async def test_streaming_errors_before_the_stream_are_plain_json(node):
    async with node.stream("SendStreamingMessage", {"message": {"messageId": "m"}}) as response:
        assert response.content_type == "application/json"
        assert_error(await response.json(), -32602, rpc_id="s-1", says="params.message.role")
    async with node.stream("SubscribeToTask", {"id": "nope"}) as response:
        assert_error(await response.json(), -32001, rpc_id="s-1")


async def test_subscribe_to_task_until_cancelled(node):
    task = (await node.rpc("SendMessage", {"message": user_message("wait"),
                                           "configuration": {"returnImmediately": True}}))["result"]["task"]
    await wait_for_state(node, task["id"], TASK_STATE_WORKING)
    async with node.stream("SubscribeToTask", {"id": task["id"]}) as response:
        assert response.content_type == "text/event-stream"
        events = sse_events(response)
        _, first = await anext(events)
        assert first["result"]["task"]["id"] == task["id"]
        assert first["result"]["task"]["status"]["state"] == TASK_STATE_WORKING
        await node.rpc("CancelTask", {"id": task["id"]})
        rest = [e["result"] async for _, e in events]
    assert rest == [{"statusUpdate": {"taskId": task["id"], "contextId": task["contextId"], "status": {
        "state": TASK_STATE_CANCELED, "timestamp": rest[0]["statusUpdate"]["status"]["timestamp"]}}}]


async def test_subscribe_to_a_finished_task_is_refused(node):
    done = (await node.rpc("SendMessage", {"message": user_message("x")}))["result"]["task"]
    async with node.stream("SubscribeToTask", {"id": done["id"]}) as response:
        assert response.content_type == "application/json"
        assert_error(await response.json(), -32004, rpc_id="s-1", says="already TASK_STATE_COMPLETED")
    async with node.stream("SubscribeToTask", {"id": "from-disk"}) as response:
        assert_error(await response.json(), -32004, rpc_id="s-1", says="no longer running")


async def test_unserialisable_event_mid_stream_becomes_an_error_event(node, caplog):
    task = (await node.rpc("SendMessage", {"message": user_message("wait"),
                                           "configuration": {"returnImmediately": True}}))["result"]["task"]
    handle = node.server.tasks.get(task["id"])
    async with node.stream("SubscribeToTask", {"id": task["id"]}) as response:
        events = sse_events(response)
        await anext(events)
        handle.add_artifact([{"data": object()}])  # not JSON
        name, error = await anext(events)
        assert name == "error"
        assert_error(error, -32603, rpc_id="s-1")
        assert [e async for e in events] == []
    assert "A2A stream 's-1' failed" in caplog.text
    handle.finish(TASK_STATE_CANCELED)
    assert handle._subscribers == []  # the stream let go of its subscription
