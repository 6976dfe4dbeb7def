"""A small A2A 1.0 JSON-RPC client for talking to peers over a shared aiohttp session.

Two kinds of failure stay apart: ``PeerUnreachable`` (no usable HTTP answer: connection refused,
timeout, a non-200 status) and ``A2AError`` (the peer answered, with a JSON-RPC error or with
something that is not a valid A2A answer). Neither message ever contains the token.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
from yarl import URL

from cortex_node.a2a.errors import InvalidAgentResponseError, error_from_jsonrpc
from cortex_node.a2a.wire import (
    CARD_PATH,
    LEGACY_CARD_PATH,
    PROTOCOL_VERSION,
    RPC_PATH,
    VERSION_HEADER,
    is_supported_version,
)


class PeerUnreachable(Exception):
    """No usable HTTP answer from a peer; the message names the URL and what happened."""


def normalize_base_url(url: str) -> str:
    """A node's base URL from its base URL, its JSON-RPC URL or its card URL."""
    base = url.strip().rstrip("/")
    for suffix in (CARD_PATH, LEGACY_CARD_PATH, RPC_PATH):
        if base.endswith(suffix):
            return base[: -len(suffix)].rstrip("/")
    return base


def jsonrpc_url(card: dict[str, Any]) -> str:
    """The URL of the card's first JSON-RPC interface for A2A 1.x (order is the agent's preference)."""
    interfaces = card.get("supportedInterfaces")
    for interface in interfaces if isinstance(interfaces, list) else []:
        if (isinstance(interface, dict) and interface.get("protocolBinding") == "JSONRPC"
                and is_supported_version(str(interface.get("protocolVersion", ""))) and interface.get("url")):
            return str(interface["url"])
    raise InvalidAgentResponseError(
        f"agent card of {card.get('name')!r} declares no JSONRPC interface with protocolVersion 1.x "
        "in supportedInterfaces")


MAX_CARD_BYTES = 256 * 1024  # an agent card is a few KiB
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a JSON-RPC answer (a directive's result is capped far below this)


class A2AClient:
    """A peer client. Answers are read with a size cap and redirects are never followed: a peer
    must answer at the address it was asked at."""

    def __init__(self, session: aiohttp.ClientSession, token: str | None = None, *,
                 max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._session = session
        self._token = token
        self._max_answer = max_answer_bytes

    async def fetch_card(self, base_url: str, timeout: float = 5) -> dict[str, Any]:
        """GET the public agent card (sent without the token: the card needs none)."""
        url = normalize_base_url(base_url) + CARD_PATH
        what = f"fetching the agent card from {_shown(url)}"
        status, reason, raw = await self._exchange("GET", url, what, timeout, limit=MAX_CARD_BYTES)
        if status != 200:
            raise PeerUnreachable(f"{what}: HTTP {status} {reason}".rstrip())
        card = _parse_json(raw, f"the agent card at {_shown(url)}")
        if not isinstance(card, dict):
            raise InvalidAgentResponseError(f"the agent card at {_shown(url)} is not a JSON object")
        return card

    async def call(self, a2a_url: str, method: str, params: dict[str, Any], timeout: float) -> Any:
        """One JSON-RPC call; returns ``result``. Raises A2AError for a JSON-RPC error."""
        request_id = str(uuid.uuid4())
        headers = {VERSION_HEADER: PROTOCOL_VERSION}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        what = f"{method} to {_shown(a2a_url)}"
        status, reason, raw = await self._exchange("POST", a2a_url, what, timeout, json=payload, headers=headers)
        if status != 200:
            hint = {401: " (the swarm token is missing or wrong)",
                    403: " (refused: this node's address is not among the peer's names; see allowedHosts)"}.get(status, "")
            raise PeerUnreachable(f"{what}: HTTP {status} {reason}{hint}")
        answer = _parse_json(raw, f"the answer of {_shown(a2a_url)} to {method}")
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise InvalidAgentResponseError(
                f"{_shown(a2a_url)} answered {method} with something that is not its JSON-RPC response")
        if answer.get("error") is not None:
            raise error_from_jsonrpc(answer["error"])
        if "result" not in answer:
            raise InvalidAgentResponseError(f"{_shown(a2a_url)} answered {method} with neither result nor error")
        return answer["result"]

    async def send_message(self, a2a_url: str, message: dict[str, Any], configuration: dict[str, Any] | None = None,
                           metadata: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        """SendMessage; returns the result, ``{"task": …}`` or ``{"message": …}``."""
        params: dict[str, Any] = {"message": message}
        if configuration:
            params["configuration"] = configuration
        if metadata:
            params["metadata"] = metadata
        result = await self.call(a2a_url, "SendMessage", params, timeout)
        if not isinstance(result, dict) or not ("task" in result or "message" in result):
            raise InvalidAgentResponseError(f"{_shown(a2a_url)} answered SendMessage with neither a task nor a message")
        return result

    async def get_task(self, a2a_url: str, task_id: str, history_length: int | None = None,
                       timeout: float = 10) -> dict[str, Any]:
        params: dict[str, Any] = {"id": task_id}
        if history_length is not None:
            params["historyLength"] = history_length
        return await self._task_call(a2a_url, "GetTask", params, timeout)

    async def cancel_task(self, a2a_url: str, task_id: str, timeout: float = 10) -> dict[str, Any]:
        return await self._task_call(a2a_url, "CancelTask", {"id": task_id}, timeout)

    async def _task_call(self, a2a_url: str, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        task = await self.call(a2a_url, method, params, timeout)
        if not isinstance(task, dict) or "id" not in task or "status" not in task:
            raise InvalidAgentResponseError(f"{_shown(a2a_url)} answered {method} with something that is not a Task")
        return task

    async def _exchange(self, http_method: str, url: str, what: str, timeout: float, limit: int | None = None,
                        **kwargs: Any) -> tuple[int, str, bytes]:
        """(status, reason, body), or PeerUnreachable on a connection failure, a timeout or an
        answer over the size limit; ``what`` names the request in that error."""
        limit = limit or self._max_answer
        try:
            async with self._session.request(http_method, url, timeout=aiohttp.ClientTimeout(total=timeout),
                                             allow_redirects=False, **kwargs) as response:
                if (response.content_length or 0) > limit:
                    raise PeerUnreachable(f"{what}: the answer is larger than {limit} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        raise PeerUnreachable(f"{what}: the answer is larger than {limit} bytes")
                return response.status, response.reason or "", bytes(body)
        except TimeoutError:
            raise PeerUnreachable(f"{what}: no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(f"{what} failed: {exc or type(exc).__name__}") from exc


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidAgentResponseError(f"{what} is not valid JSON") from None


def _shown(url: str) -> str:
    """The URL for messages, without any user:password part."""
    try:
        return str(URL(url).with_user(None))
    except (ValueError, TypeError):
        return url
