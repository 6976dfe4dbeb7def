"""Conformance with A2A 1.0 as the official a2a-sdk client speaks it.

The server runs on a loopback port with a small echo handler. Two kinds of check:
* the SDK client (card resolver + ClientFactory, plain and streaming) does each operation, and
* the raw JSON of the card and of each kind of result is parsed strictly into the SDK's protobuf
  types (unknown fields rejected, REQUIRED fields enforced, no UNSPECIFIED enum), because the SDK
  client itself is lenient and would accept much that is wrong.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils import errors as sdk_errors
from a2a.utils.proto_utils import validate_proto_required_fields
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message as ProtoMessage

from cortex_node.a2a.handler import AgentCardInfo
from cortex_node.a2a.server import A2AServer, build_agent_card
from cortex_node.a2a.tasks import TaskHandle, TaskStore
from cortex_node.a2a.wire import ROLE_AGENT, TASK_STATE_COMPLETED, make_message, text_part
from cortex_node.clock import SystemClock

A2A_PACKAGE = Task.DESCRIPTOR.file.package
P = TypeVar("P", bound=ProtoMessage)


class EchoHandler:
    """"reply" answers with a message; "wait" works until cancelled; anything else is echoed as
    an artifact and completed."""

    def __init__(self) -> None:
        self.work: set[asyncio.Task] = set()

    async def handle_message(self, message: dict, params: dict, tasks: TaskStore) -> dict | TaskHandle:
        text = message["parts"][0].get("text", "")
        if text == "reply":
            return make_message(ROLE_AGENT, [text_part("hello back")])
        handle = tasks.create(context_id=message.get("contextId"), history=[message])
        work = asyncio.create_task(self._run(handle, text))
        self.work.add(work)
        work.add_done_callback(self.work.discard)
        return handle

    async def _run(self, handle: TaskHandle, text: str) -> None:
        handle.set_working()
        if text == "wait":
            await handle.cancel_requested.wait()
            return
        handle.add_artifact([text_part(f"echo: {text}")], name="echo")
        handle.finish(TASK_STATE_COMPLETED, text="done", data={"length": len(text)})

    async def cancel_task(self, handle: TaskHandle) -> None:
        """The work watches ``cancel_requested``; the server then marks the task CANCELED."""

    async def load_task(self, task_id: str) -> dict | None:
        return None


def card_info(base_url: str, bearer: bool = False) -> AgentCardInfo:
    return AgentCardInfo(
        name="conformance-node", description="Cortex Swarm node under test", version="0.1.0", base_url=base_url,
        skills=[{"id": "echo", "name": "Echo", "description": "Echoes text", "tags": ["test"],
                 "examples": ["hello"]}],
        extensions=[{"uri": "https://cortex-swarm.dev/ext/swarm/v1", "description": "swarm heartbeat",
                     "required": False}],
        bearer_required=bearer)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    handler = EchoHandler()
    address: dict[str, str] = {}
    app = web.Application()
    app.add_routes(A2AServer(handler, lambda: card_info(address["base"]), SystemClock()).routes())
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    address["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield address["base"]
    for work in list(handler.work):
        work.cancel()
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, headers={"A2A-Version": "1.0"}) as client:
        yield client


async def sdk_client(http: httpx.AsyncClient, base_url: str, streaming: bool):
    card = await A2ACardResolver(http, base_url).get_agent_card()
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


def user_message(text: str) -> Message:
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])


# --- strict parsing of raw JSON ---------------------------------------------------------------------
def strict(raw: Any, proto_type: type[P], check_required: bool = True) -> P:
    parsed = ParseDict(raw, proto_type(), ignore_unknown_fields=False)
    if check_required:
        validate_proto_required_fields(parsed)
    assert_no_unspecified(parsed, proto_type.__name__)
    return parsed


def assert_no_unspecified(message: ProtoMessage, path: str) -> None:
    """Every A2A enum (TaskState, Role) anywhere in ``message`` has a real value, never 0."""
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        where = f"{path}.{field.json_name}"
        if field.type == FieldDescriptor.TYPE_ENUM:
            for i, item in enumerate(value if field.is_repeated else [value]):
                assert item != 0, f"{where}[{i}] is {field.enum_type.values_by_number[0].name}"
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.file.package == A2A_PACKAGE:
            if field.message_type.GetOptions().map_entry:
                items = [(k, v) for k, v in value.items() if isinstance(v, ProtoMessage)]
            elif field.is_repeated:
                items = list(enumerate(value))
            else:
                items = [("", value)] if message.HasField(field.name) else []
            for key, item in items:
                assert_no_unspecified(item, f"{where}[{key}]" if key != "" else where)


async def raw_rpc(http: httpx.AsyncClient, base_url: str, method: str, params: dict) -> Any:
    body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}
    response = await http.post(base_url + "/a2a", json=body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == body["id"] and "error" not in answer, answer
    return answer["result"]


async def raw_stream(http: httpx.AsyncClient, base_url: str, method: str, params: dict) -> AsyncIterator[Any]:
    """The ``result`` of each SSE event, as it arrives."""
    body = {"jsonrpc": "2.0", "id": "sse-1", "method": method, "params": params}
    async with http.stream("POST", base_url + "/a2a", json=body, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                assert event["jsonrpc"] == "2.0" and event["id"] == "sse-1" and "error" not in event, event
                yield event["result"]


def raw_message(text: str) -> dict:
    return {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}


# --- the card --------------------------------------------------------------------------------------
async def test_card_parses_strictly_and_selects_the_1_0_transport(http, base_url):
    raw = (await http.get(base_url + "/.well-known/agent-card.json")).json()
    card = strict(raw, AgentCard)
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces] == [
        (base_url + "/a2a", "JSONRPC", "1.0")]
    assert card.capabilities.streaming and not card.capabilities.push_notifications
    resolved = await A2ACardResolver(http, base_url).get_agent_card()
    assert resolved == card


def test_bearer_card_parses_strictly():
    card = strict(build_agent_card(card_info("http://127.0.0.1:4220", bearer=True)), AgentCard)
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert list(card.security_requirements[0].schemes) == ["bearer"]


# --- SendMessage -----------------------------------------------------------------------------------
async def test_send_message_plain(http, base_url):
    client = await sdk_client(http, base_url, streaming=False)
    events = [event async for event in client.send_message(SendMessageRequest(message=user_message("hi")))]
    assert len(events) == 1 and events[0].WhichOneof("payload") == "task"
    task = events[0].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.artifacts[0].parts[0].text == "echo: hi"
    assert task.status.message.role == Role.ROLE_AGENT and task.status.message.parts[1].data.struct_value["length"] == 2

    raw = await raw_rpc(http, base_url, "SendMessage", {"message": raw_message("hi"), "configuration": {}})
    strict(raw, SendMessageResponse)


async def test_send_message_with_a_direct_reply(http, base_url):
    for streaming in (False, True):
        client = await sdk_client(http, base_url, streaming=streaming)
        events = [event async for event in client.send_message(SendMessageRequest(message=user_message("reply")))]
        assert [e.WhichOneof("payload") for e in events] == ["message"]
        assert events[0].message.role == Role.ROLE_AGENT and events[0].message.parts[0].text == "hello back"
    strict(await raw_rpc(http, base_url, "SendMessage", {"message": raw_message("reply")}), SendMessageResponse)


async def test_send_streaming_message(http, base_url):
    client = await sdk_client(http, base_url, streaming=True)
    events = [event async for event in client.send_message(SendMessageRequest(message=user_message("hi")))]
    assert [e.WhichOneof("payload") for e in events] == ["task", "status_update", "artifact_update", "status_update"]
    assert events[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert events[1].status_update.status.state == TaskState.TASK_STATE_WORKING
    assert events[2].artifact_update.artifact.parts[0].text == "echo: hi"
    assert events[3].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert {e.status_update.task_id or e.artifact_update.task_id for e in events[1:]} == {events[0].task.id}

    raw_events = [r async for r in raw_stream(http, base_url, "SendStreamingMessage", {"message": raw_message("hi")})]
    assert len(raw_events) == 4
    for raw in raw_events:
        strict(raw, StreamResponse)


# --- GetTask, ListTasks ------------------------------------------------------------------------------
async def test_get_task_and_list_tasks(http, base_url):
    client = await sdk_client(http, base_url, streaming=False)
    created = []
    for text in ("one", "two", "three"):
        [event] = [e async for e in client.send_message(SendMessageRequest(message=user_message(text)))]
        created.append(event.task.id)

    task = await client.get_task(GetTaskRequest(id=created[0], history_length=1))
    assert task.id == created[0] and task.status.state == TaskState.TASK_STATE_COMPLETED and len(task.history) == 1
    strict(await raw_rpc(http, base_url, "GetTask", {"id": created[0]}), Task)

    first = await client.list_tasks(ListTasksRequest(page_size=2))
    assert (len(first.tasks), first.page_size, first.total_size) == (2, 2, 3) and first.next_page_token
    rest = await client.list_tasks(ListTasksRequest(page_size=2, page_token=first.next_page_token))
    assert len(rest.tasks) == 1 and rest.next_page_token == ""
    assert {t.id for t in [*first.tasks, *rest.tasks]} == set(created)

    raw = await raw_rpc(http, base_url, "ListTasks", {"pageSize": 2, "includeArtifacts": True})
    assert set(raw) == {"tasks", "nextPageToken", "pageSize", "totalSize"}  # all REQUIRED
    # The last page's empty token is the proto default, which the required-field check counts as
    # missing; so the tasks are checked one by one instead.
    listed = strict(raw, ListTasksResponse, check_required=False)
    for one in listed.tasks:
        validate_proto_required_fields(one)
    assert listed.tasks[0].artifacts[0].parts[0].text.startswith("echo: ")


async def test_unknown_task_is_a_typed_error(http, base_url):
    client = await sdk_client(http, base_url, streaming=False)
    with pytest.raises(sdk_errors.TaskNotFoundError):
        await client.get_task(GetTaskRequest(id="no-such-task"))


# --- CancelTask, SubscribeToTask ---------------------------------------------------------------------
async def start_waiting_task(client) -> Task:
    request = SendMessageRequest(message=user_message("wait"),
                                 configuration=SendMessageConfiguration(return_immediately=True))
    [event] = [e async for e in client.send_message(request)]
    assert event.task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
    return event.task


async def test_cancel_task(http, base_url):
    client = await sdk_client(http, base_url, streaming=False)
    task = await start_waiting_task(client)
    cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
    assert cancelled.id == task.id and cancelled.status.state == TaskState.TASK_STATE_CANCELED
    with pytest.raises(sdk_errors.TaskNotCancelableError):
        await client.cancel_task(CancelTaskRequest(id=task.id))

    other = await start_waiting_task(client)
    strict(await raw_rpc(http, base_url, "CancelTask", {"id": other.id}), Task)


async def test_subscribe_to_task(http, base_url):
    plain = await sdk_client(http, base_url, streaming=False)
    streaming = await sdk_client(http, base_url, streaming=True)
    task = await start_waiting_task(plain)
    events = streaming.subscribe(SubscribeToTaskRequest(id=task.id))
    first = await anext(events)
    assert first.WhichOneof("payload") == "task" and first.task.id == task.id  # spec: the first event is the task
    await plain.cancel_task(CancelTaskRequest(id=task.id))
    rest = [event async for event in events]
    assert rest[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
    with pytest.raises(sdk_errors.UnsupportedOperationError):
        async for _ in streaming.subscribe(SubscribeToTaskRequest(id=task.id)):
            pass

    other = await start_waiting_task(plain)
    raw_events = raw_stream(http, base_url, "SubscribeToTask", {"id": other.id})
    first_raw = await anext(raw_events)
    await plain.cancel_task(CancelTaskRequest(id=other.id))
    rest_raw = [raw async for raw in raw_events]
    assert next(iter(first_raw)) == "task" and rest_raw
    for raw in [first_raw, *rest_raw]:
        strict(raw, StreamResponse)
