"""The A2A 1.0 JSON-RPC server for aiohttp: the agent card and ``POST /a2a``.

Every JSON-RPC answer is HTTP 200 (spec §9): errors travel in the body with the spec's codes.
Authentication and the body-size limit are the application's middleware's business, not this
module's: by the time a request gets here it is allowed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from cortex_node.a2a.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    JSONParseError,
    MethodNotFoundError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
    VersionNotSupportedError,
)
from cortex_node.a2a.handler import A2AHandler, AgentCardInfo, ExtensionMethod
from cortex_node.a2a.tasks import TaskHandle, TaskStore, TaskSubscription
from cortex_node.a2a.wire import (
    CARD_PATH,
    LEGACY_CARD_PATH,
    PROTOCOL_VERSION,
    ROLE_AGENT,
    RPC_PATH,
    TASK_STATE_CANCELED,
    TASK_STATES,
    VERSION_HEADER,
    apply_history_length,
    is_supported_version,
    validate_message,
)
from cortex_node import jsonfast
from cortex_node.clock import Clock
from cortex_node.contracts import parse_ts, quote

log = logging.getLogger("cortex.a2a")

MEDIA_MODES = ("text/plain", "application/json")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100

_UNSPECIFIED_STATE = "TASK_STATE_UNSPECIFIED"

RpcId = str | int | None
RpcMethod = Callable[[dict[str, Any]], Awaitable[Any]]
# What a streaming method has ready before the stream opens: the first event, and the task's
# later events (None when the first event is the whole answer, a direct message reply).
StreamStart = tuple[dict[str, Any], TaskSubscription | None]


def build_agent_card(info: AgentCardInfo) -> dict[str, Any]:
    """The A2A 1.0 agent card (ProtoJSON AgentCard) for ``info``."""
    base_url = info.base_url.rstrip("/")
    capabilities: dict[str, Any] = {"streaming": True, "pushNotifications": False}
    if info.extensions:
        capabilities["extensions"] = list(info.extensions)
    card: dict[str, Any] = {
        "name": info.name,
        "description": info.description,
        "version": info.version,
        # Without a 1.0 interface entry the SDK client falls back to speaking 0.3 to us.
        "supportedInterfaces": [{"url": base_url + RPC_PATH, "protocolBinding": "JSONRPC",
                                 "protocolVersion": PROTOCOL_VERSION}],
        "provider": {"organization": info.provider_org, "url": base_url},
        "capabilities": capabilities,
        "defaultInputModes": list(MEDIA_MODES),
        "defaultOutputModes": list(MEDIA_MODES),
        "skills": list(info.skills),
    }
    if info.bearer_required:
        card["securitySchemes"] = {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}}
        card["securityRequirements"] = [{"schemes": {"bearer": {"list": []}}}]
    return card


class A2AServer:
    """Serves the card and the JSON-RPC methods; the embedder's ``handler`` does the work.

    Mount with ``app.add_routes(server.routes())``. ``card_info_provider`` is called per card
    request, so the card follows the node (its URL, extensions, whether a token is needed).
    """

    def __init__(self, handler: A2AHandler, card_info_provider: Callable[[], AgentCardInfo], clock: Clock,
                 tasks: TaskStore | None = None, *, extension_methods: Mapping[str, ExtensionMethod] | None = None) -> None:
        """``clock`` stamps the tasks of the default store; pass ``tasks`` to share or size the store.
        ``extension_methods``: extra JSON-RPC methods (e.g. the swarm heartbeat), called with params;
        they return the result or raise A2AError or ValueError (-> -32602)."""
        self._handler = handler
        self._card_info = card_info_provider
        self.tasks = tasks if tasks is not None else TaskStore(clock)
        self._methods: dict[str, RpcMethod] = {
            "SendMessage": self._send_message,
            "GetTask": self._get_task,
            "ListTasks": self._list_tasks,
            "CancelTask": self._cancel_task,
            "CreateTaskPushNotificationConfig": self._push_not_supported,
            "GetTaskPushNotificationConfig": self._push_not_supported,
            "ListTaskPushNotificationConfigs": self._push_not_supported,
            "DeleteTaskPushNotificationConfig": self._push_not_supported,
            "GetExtendedAgentCard": self._no_extended_card,
        }
        self._stream_methods: dict[str, Callable[[dict[str, Any]], Awaitable[StreamStart]]] = {
            "SendStreamingMessage": self._start_message_stream,
            "SubscribeToTask": self._start_subscription,
        }
        self._extensions: dict[str, RpcMethod] = dict(extension_methods or {})
        clash = set(self._extensions) & (set(self._methods) | set(self._stream_methods))
        if clash:
            raise ValueError(f"extension methods may not replace A2A methods: {', '.join(sorted(clash))}")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(CARD_PATH, self._serve_card),
            web.get(LEGACY_CARD_PATH, self._serve_card),
            web.post(RPC_PATH, self._serve_rpc),
        ]

    # --- agent card -------------------------------------------------------------------------
    async def _serve_card(self, request: web.Request) -> web.Response:
        body = json.dumps(build_agent_card(self._card_info()), sort_keys=True, separators=(",", ":")).encode()
        # Weak: the tag promises the same card, not the same bytes (spec §8.6).
        headers = {"ETag": f'W/"{hashlib.sha256(body).hexdigest()}"', "Cache-Control": "no-cache"}
        if _if_none_match_hits(request.headers.get("If-None-Match", ""), headers["ETag"]):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    # --- JSON-RPC envelope ------------------------------------------------------------------
    async def _serve_rpc(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # a too-large body raises 413 here, answered by aiohttp
        try:
            body = json.loads(raw)
        except RecursionError:
            return _error_response(None, JSONParseError("Invalid JSON payload: nested too deeply"))
        except ValueError as exc:
            return _error_response(None, JSONParseError(f"Invalid JSON payload: {exc}"))
        if isinstance(body, list):
            return _error_response(None, InvalidRequestError("Batch requests are not supported"))
        if not isinstance(body, dict):
            return _error_response(None, InvalidRequestError("Invalid request: the body must be a JSON-RPC object"))
        rpc_id = body.get("id")
        # bool is an int to Python, but not to JSON-RPC
        if isinstance(rpc_id, bool) or not isinstance(rpc_id, (str, int, type(None))):
            return _error_response(None, InvalidRequestError("Invalid request: id must be a string, integer, or null"))
        if body.get("jsonrpc") != "2.0":
            return _error_response(rpc_id, InvalidRequestError("Invalid request: 'jsonrpc' must be exactly '2.0'"))
        method = body.get("method")
        if not isinstance(method, str) or not method:
            return _error_response(rpc_id, InvalidRequestError(
                "Invalid request: 'method' is required and must be a non-empty string"))
        if method not in self._methods and method not in self._stream_methods and method not in self._extensions:
            known = ", ".join([*self._methods, *self._stream_methods, *self._extensions])
            return _error_response(rpc_id, MethodNotFoundError(f"Method not found: {quote(method)}; this agent has {known}"))
        # Checked after the method lookup, as the SDK server does. Missing or empty means 0.3.
        # Only the header counts, never ?A2A-Version=: a web page cannot set a header on a
        # request it sends without asking the server first, but it can write any query string.
        version = (request.headers.get(VERSION_HEADER) or "").strip() or "0.3"
        if not is_supported_version(version):
            shown = version if len(version) <= 80 else version[:80] + "…"
            return _error_response(rpc_id, VersionNotSupportedError(
                f"A2A version {shown!r} is not supported; this agent speaks A2A {PROTOCOL_VERSION} "
                f"(send the header '{VERSION_HEADER}: {PROTOCOL_VERSION}')"))
        params = body.get("params", {})
        if not isinstance(params, dict):
            return _error_response(rpc_id, InvalidParamsError("params must be an object"))
        try:
            if method in self._stream_methods:
                first, updates = await self._stream_methods[method](params)
                return await _write_stream(request, rpc_id, first, updates)
            if method in self._extensions:
                result = await self._call_extension(method, params)
            else:
                result = await self._methods[method](params)
            return _json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})
        except A2AError as exc:
            log.debug("A2A %s (id %r) answered %d: %s", method, rpc_id, exc.code, exc.message)
            return _error_response(rpc_id, exc)
        except Exception:
            log.exception("A2A %s (id %r) failed", method, rpc_id)
            return _error_response(rpc_id, InternalError("Internal error; see the agent's log"))

    async def _call_extension(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return await self._extensions[method](params)
        except ValueError as exc:  # the extension's word for "your params are wrong"
            raise InvalidParamsError(str(exc) or "Invalid params") from None

    # --- methods ----------------------------------------------------------------------------
    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        message = validate_message(params.get("message"), "params.message")
        history_length, return_immediately = _message_configuration(params)
        outcome = await self._accept_message(message, params)
        if not isinstance(outcome, TaskHandle):
            return {"message": outcome}
        if not return_immediately:
            await outcome.wait_terminal()
        return {"task": outcome.to_proto(history_length)}

    async def _start_message_stream(self, params: dict[str, Any]) -> StreamStart:
        message = validate_message(params.get("message"), "params.message")
        history_length, _ = _message_configuration(params)
        outcome = await self._accept_message(message, params)
        if not isinstance(outcome, TaskHandle):
            return {"message": outcome}, None
        updates = outcome.subscribe()  # before the snapshot, so no event falls between the two
        return {"task": outcome.to_proto(history_length)}, updates

    async def _accept_message(self, message: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | TaskHandle:
        """Hand a validated message to the handler; check what it gave back: a TaskHandle or an agent message."""
        if "metadata" in params and not isinstance(params["metadata"], dict):
            raise InvalidParamsError("params.metadata must be an object")
        if message.get("taskId"):
            await self._require_open_task(message["taskId"])
        outcome = await self._handler.handle_message(message, params, self.tasks)
        if isinstance(outcome, TaskHandle):
            return outcome
        if not isinstance(outcome, dict) or outcome.get("role") != ROLE_AGENT:
            raise TypeError(f"handle_message returned {outcome!r}; expected a TaskHandle or a ROLE_AGENT message")
        try:
            validate_message(outcome, "reply")
        except InvalidParamsError as exc:  # the handler's fault, not the client's
            raise TypeError(f"handle_message returned an invalid message: {exc.message}") from None
        if message.get("contextId") and "contextId" not in outcome:
            outcome = {**outcome, "contextId": message["contextId"]}
        return outcome

    async def _require_open_task(self, task_id: str) -> None:
        """A message may continue a task only while that task is running here."""
        handle = self.tasks.get(task_id)
        if handle is None:
            stored = await self._load_task(task_id)
            raise UnsupportedOperationError(
                f"task {quote(task_id)} is {_state_of(stored)} and no longer running on this agent; "
                "it accepts no more messages")
        if handle.is_terminal:
            raise UnsupportedOperationError(
                f"task {quote(task_id)} is already {handle.state}; a finished task accepts no more messages")

    async def _get_task(self, params: dict[str, Any]) -> dict[str, Any]:
        task_id = _required_str(params, "id")
        history_length = _optional_int(params, "historyLength", minimum=0)
        handle = self.tasks.get(task_id)
        if handle is not None:
            return handle.to_proto(history_length)
        return apply_history_length(await self._load_task(task_id), history_length)

    async def _list_tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        state = _optional_str(params, "status")
        if state in (_UNSPECIFIED_STATE, ""):
            state = None  # the proto default: no filter
        if state is not None and state not in TASK_STATES:
            raise InvalidParamsError(f"params.status must be one of {', '.join(sorted(TASK_STATES))}; got {quote(state)}")
        page_size = _optional_int(params, "pageSize", minimum=0) or DEFAULT_PAGE_SIZE  # 0 is the proto default
        if page_size > MAX_PAGE_SIZE:
            raise InvalidParamsError(f"params.pageSize must be from 1 to {MAX_PAGE_SIZE}; got {page_size}")
        history_length = _optional_int(params, "historyLength", minimum=0)
        include_artifacts = _optional_bool(params, "includeArtifacts")
        after = _optional_str(params, "statusTimestampAfter")
        try:
            after_ms = parse_ts(after) if after else None
        except ValueError:
            raise InvalidParamsError(
                f"params.statusTimestampAfter must be an RFC 3339 timestamp like 2026-01-31T12:00:00Z; got {quote(after)}"
            ) from None
        try:
            page = self.tasks.list(context_id=_optional_str(params, "contextId") or None, state=state,
                                   page_size=page_size, page_token=_optional_str(params, "pageToken"),
                                   status_after_ms=after_ms)
        except ValueError as exc:
            raise InvalidParamsError(f"params.pageToken is not valid: {exc}") from None
        return {"tasks": [h.to_proto(history_length, include_artifacts) for h in page.tasks],
                "nextPageToken": page.next_page_token, "pageSize": page_size, "totalSize": page.total_size}

    async def _cancel_task(self, params: dict[str, Any]) -> dict[str, Any]:
        task_id = _required_str(params, "id")
        handle = self.tasks.get(task_id)
        if handle is None:
            stored = await self._load_task(task_id)
            raise TaskNotCancelableError(f"task {quote(task_id)} is {_state_of(stored)} and no longer running on this agent")
        if handle.is_terminal:
            raise TaskNotCancelableError(f"task {quote(task_id)} is already {handle.state}")
        handle.cancel_requested.set()
        await self._handler.cancel_task(handle)
        handle.finish(TASK_STATE_CANCELED)  # no-op when the handler already ended the task
        return handle.to_proto()

    async def _start_subscription(self, params: dict[str, Any]) -> StreamStart:
        task_id = _required_str(params, "id")
        handle = self.tasks.get(task_id)
        if handle is None:
            stored = await self._load_task(task_id)
            raise UnsupportedOperationError(
                f"task {quote(task_id)} is {_state_of(stored)} and no longer running on this agent; "
                "there is nothing to subscribe to")
        if handle.is_terminal:
            raise UnsupportedOperationError(f"task {quote(task_id)} is already {handle.state}; there is nothing to stream")
        updates = handle.subscribe()
        return {"task": handle.to_proto()}, updates

    async def _push_not_supported(self, params: dict[str, Any]) -> Any:
        raise PushNotificationNotSupportedError(
            "Push notifications are not supported by this agent (capabilities.pushNotifications is false)")

    async def _no_extended_card(self, params: dict[str, Any]) -> Any:
        raise UnsupportedOperationError(
            "This agent has no extended agent card (capabilities.extendedAgentCard is not set)")

    async def _load_task(self, task_id: str) -> dict[str, Any]:
        """A task no longer in memory, from the handler's own records; -32001 if it has none."""
        stored = await self._handler.load_task(task_id)
        if stored is None:
            raise TaskNotFoundError(f"Task not found: {quote(task_id)}")
        return stored


# --- helpers ----------------------------------------------------------------------------------
def _message_configuration(params: dict[str, Any]) -> tuple[int | None, bool]:
    """(historyLength, returnImmediately) from SendMessage's configuration."""
    config = params.get("configuration", {})
    if not isinstance(config, dict):
        raise InvalidParamsError("params.configuration must be an object")
    if config.get("taskPushNotificationConfig"):
        raise PushNotificationNotSupportedError(
            "Push notifications are not supported by this agent; leave out configuration.taskPushNotificationConfig")
    history_length = _optional_int(config, "historyLength", minimum=0, where="params.configuration")
    return history_length, _optional_bool(config, "returnImmediately", where="params.configuration")


def _required_str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidParamsError(f"params.{key} is required and must be a non-empty string")
    return value


def _optional_str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidParamsError(f"params.{key} must be a string")
    return value


def _optional_int(params: dict[str, Any], key: str, minimum: int, where: str = "params") -> int | None:
    """An int32 field; ProtoJSON also allows it as a decimal string."""
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParamsError(f"{where}.{key} must be an integer of at least {minimum}; got {quote(value)}")
    return value


def _optional_bool(params: dict[str, Any], key: str, where: str = "params") -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidParamsError(f"{where}.{key} must be true or false; got {quote(value)}")
    return value


def _state_of(task: dict[str, Any]) -> str:
    status = task.get("status")
    return status.get("state", "in an unknown state") if isinstance(status, dict) else "in an unknown state"


def _if_none_match_hits(header: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison, a list of tags, or '*'."""
    candidates = [c.strip() for c in header.split(",") if c.strip()]
    return "*" in candidates or any(c.removeprefix("W/") == etag.removeprefix("W/") for c in candidates)


def _dumps(doc: Any) -> bytes:
    return jsonfast.dumps(doc)


def _json_response(doc: dict[str, Any]) -> web.Response:
    return web.Response(body=_dumps(doc), content_type="application/json")


def _error_response(rpc_id: RpcId, error: A2AError) -> web.Response:
    return _json_response({"jsonrpc": "2.0", "id": rpc_id, "error": error.to_jsonrpc_error()})


async def _write_stream(request: web.Request, rpc_id: RpcId, first: dict[str, Any],
                        updates: TaskSubscription | None) -> web.StreamResponse:
    """SSE: one ``data:`` line per StreamResponse, each wrapped in a JSON-RPC response; the stream
    ends after the terminal status. A failure mid-stream is sent as ``event: error``."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    try:
        await response.prepare(request)
        await response.write(b"data: " + _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": first}) + b"\n\n")
        if updates is not None:
            async for event in updates:
                await response.write(b"data: " + _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": event}) + b"\n\n")
        await response.write_eof()
    except ConnectionResetError:
        log.debug("A2A stream %r: the client went away", rpc_id)
    except Exception:
        log.exception("A2A stream %r failed", rpc_id)
        error = {"jsonrpc": "2.0", "id": rpc_id, "error": InternalError("Internal error; see the agent's log")
                 .to_jsonrpc_error()}
        if response.prepared:
            try:
                await response.write(b"event: error\ndata: " + _dumps(error) + b"\n\n")
                await response.write_eof()
            except ConnectionResetError:
                pass
    finally:
        if updates is not None:
            updates.close()
    return response
