"""The node's REST API over aiohttp (one session for the app's lifetime)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp

from cortex_node.contracts import ApiPath, error_line, format_ts
from cortex_tui.client.models import BadAnswer, Directive, FleetState, Node, NodeEvent, Snapshot
from cortex_tui.client.source import (
    ControlAction,
    NotFound,
    RequestFailed,
    SourceError,
    Unauthorized,
    Unreachable,
)


class SwarmClient:
    """Talks to one cortex-node. Safe to use from one event loop; the session is created lazily
    so the client can be built before the loop runs."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = self.base_url
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, params: dict[str, Any] | None = None,
                       body: dict[str, Any] | None = None) -> Any:
        url = self.base_url + path
        try:
            async with self._http().request(method, url, params=params, json=body) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            raise Unreachable(f"{self.base_url} did not answer within {self._timeout.total:.0f} s") from None
        except aiohttp.ClientConnectorError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unreachable(f"no cortex-node answers at {self.base_url} ({reason.lower()})") from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"connection to {self.base_url} failed: {exc or type(exc).__name__}") from None
        if status >= 400:
            raise _http_error(status, raw, self.base_url)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise RequestFailed(f"{method} {path} answered with something that is not JSON; "
                                f"is {self.base_url} a cortex-node?") from None

    async def fetch_fleet(self) -> FleetState:
        nodes, topology, report = await asyncio.gather(
            self._request("GET", ApiPath.NODES),
            self._request("GET", ApiPath.TOPOLOGY),
            self._request("GET", ApiPath.REPORT),
        )
        try:
            return FleetState.from_json(nodes, topology, report)
        except BadAnswer as exc:
            raise RequestFailed(f"unexpected answer from {self.base_url}: {exc}") from None

    async def fetch_snapshots(self, node_id: str, *, limit: int, since_ms: int | None = None) -> list[Snapshot]:
        params: dict[str, Any] = {"limit": limit}
        if since_ms is not None:
            params["since"] = format_ts(since_ms)
        doc = await self._request("GET", ApiPath.NODE_SNAPSHOTS(node_id=node_id), params=params)
        return _parse_list(doc, "snapshots", Snapshot.from_json, self.base_url)

    async def fetch_events(self, node_id: str, *, limit: int = 50) -> list[NodeEvent]:
        doc = await self._request("GET", ApiPath.NODE_EVENTS(node_id=node_id), params={"limit": limit})
        return _parse_list(doc, "events", NodeEvent.from_json, self.base_url)

    async def fetch_directives(self, *, status: str | None = None, limit: int = 200) -> list[Directive]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        doc = await self._request("GET", ApiPath.DIRECTIVES, params=params)
        return _parse_list(doc, "directives", Directive.from_json, self.base_url)

    async def control(self, action: ControlAction, node: Node) -> Node:
        """The connected node controls itself (``ApiPath.control(action)``); any other node is
        addressed by id through it, which older nodes cannot do."""
        body = {"reason": "cortex-tui operator"}
        if node.is_self:
            doc = await self._request("POST", ApiPath.control(action.value), body=body)
        else:
            try:
                doc = await self._request("POST", ApiPath.control(action.value, node.id), body=body)
            except NotFound as exc:
                raise NotFound(f"{node.name}: the node at {self.base_url} cannot {action.value} other nodes "
                               f"({exc}); connect to it directly: cortex-tui --url {node.endpoint}") from None
        try:
            return Node.from_json(doc)
        except BadAnswer as exc:
            raise RequestFailed(f"unexpected answer from {self.base_url}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _http_error(status: int, raw: bytes, base_url: str) -> SourceError:
    kind = {401: Unauthorized, 404: NotFound}.get(status, RequestFailed)
    return kind(error_line(status, raw, base_url))


def _parse_list(doc: Any, key: str, parse: Any, base_url: str) -> list[Any]:
    try:
        items = doc.get(key) if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise BadAnswer(f"expected a list '{key}'")
        return [parse(item) for item in items]
    except BadAnswer as exc:
        raise RequestFailed(f"unexpected answer from {base_url}: {exc}") from None
