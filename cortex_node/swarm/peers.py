"""Every call this node makes to another node: agent cards, directives, heartbeats, leave
notices, remote control, cancels. One pooled aiohttp session; no other module talks to a peer.

This is the one place for what peer I/O needs everywhere (timeouts, the swarm token, the card
cache, and later URL validation, answer size caps and the mTLS client identity).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from cortex_node.a2a.client import A2AClient, PeerUnreachable, normalize_base_url
from cortex_node.a2a.errors import A2AError
from cortex_node.clock import Clock
from cortex_node.contracts import DirectiveResultStatus, SwarmDirective, SwarmDirectiveResult
from cortex_node.swarm.envelope import directive_to_message, failed_result, result_from_task

CARD_TTL_S = 60.0
HEARTBEAT_METHOD = "SwarmHeartbeat"
LEAVE_METHOD = "SwarmLeave"
CONTROL_METHOD = "SwarmControl"
LEAVE_TIMEOUT_S = 2.0
CONTROL_TIMEOUT_S = 10.0
CANCEL_TIMEOUT_S = 5.0
MAX_URL_CHARS = 2048
WORK_POOL = 100  # connections for directives, which may be held for a whole TTL
CONTROL_POOL = 64  # heartbeats, leave, control, cancel, cards: never queued behind long directives


def peer_base_url(value: Any, what: str) -> str:
    """A node's base URL as somebody else told it us (a heartbeat, a digest, a request): http or
    https, a host, no user name or password, no query or fragment. Raises ValueError naming ``what``."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_URL_CHARS:
        raise ValueError(f"{what} must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    base = normalize_base_url(value)
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(f"{what} is not a valid URL: {base[:80]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host; got {base[:80]!r}")
    if "@" in parts.netloc:
        raise ValueError(f"{what} must not carry a user name or password")
    if parts.query or parts.fragment or "?" in base or "#" in base:
        raise ValueError(f"{what} must not have a query or a fragment")
    return base


def peer_rpc_url(value: Any, base: str, what: str) -> str:
    """A node's JSON-RPC URL: its base URL + ``/a2a`` (so a node can never point its peers, and
    their swarm token, at another host or path). None means exactly that."""
    rpc = f"{base}/a2a"
    if value is not None and (not isinstance(value, str) or value.rstrip("/") != rpc):
        raise ValueError(f"{what} must be the node's own JSON-RPC URL {rpc[:90]!r}")
    return rpc


@dataclass
class _CachedCard:
    card: dict[str, Any]
    fetched_at: float


class Peers:
    """The node's client side. ``connect`` before use, ``close`` at the end."""

    def __init__(self, clock: Clock, token: str | None) -> None:
        self.clock = clock
        self.token = token
        self._sessions: list[aiohttp.ClientSession] = []
        self._work: A2AClient | None = None
        self._control: A2AClient | None = None
        self._cards: dict[str, _CachedCard] = {}

    async def connect(self) -> None:
        """Two pools: directives can hold connections for a whole TTL, so membership traffic
        (heartbeats, leave, control, cancel, cards) has its own and never waits behind them."""
        if not self._sessions:
            clients = []
            for size in (WORK_POOL, CONTROL_POOL):
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=size, limit_per_host=size // 2))
                self._sessions.append(session)
                clients.append(A2AClient(session, self.token))
            self._work, self._control = clients

    async def close(self) -> None:
        sessions, self._sessions, self._work, self._control = self._sessions, [], None, None
        for session in sessions:
            await session.close()

    @property
    def _a2a(self) -> A2AClient:
        if self._work is None:
            raise RuntimeError("the peer client is not connected")
        return self._work

    @property
    def _ctl(self) -> A2AClient:
        if self._control is None:
            raise RuntimeError("the peer client is not connected")
        return self._control

    async def card(self, url: str, *, fresh: bool = False) -> dict[str, Any]:
        """The peer's agent card, cached for a minute. Raises PeerUnreachable."""
        base = normalize_base_url(url)
        cached = self._cards.get(base)
        if cached and not fresh and self.clock.monotonic() - cached.fetched_at < CARD_TTL_S:
            return cached.card
        card = await self._ctl.fetch_card(base)
        self._cards[base] = _CachedCard(card, self.clock.monotonic())
        return card

    async def send_directive(self, rpc_url: str, d: SwarmDirective, timeout_s: float) -> SwarmDirectiveResult:
        """Send and wait (blocking SendMessage) for the terminal state within ``timeout_s``.
        On expiry the task is cancelled on the target and the result is ``timed_out``; an
        unreachable target is ``failed`` with the reason. Never hangs, never raises for the peer."""
        message = directive_to_message(d)
        target = d.target_node_id
        try:
            # our own deadline fires first, so a TTL expiry is told apart from a dead connection
            answer = await asyncio.wait_for(self._a2a.send_message(rpc_url, message, timeout=timeout_s + 5), timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            return await self._expire(rpc_url, d)
        except PeerUnreachable as exc:
            return failed_result(d, target, f"node unreachable: {exc}")
        except A2AError as exc:
            return failed_result(d, target, f"the target refused the directive ({exc.code}): {exc.message}")
        task = answer.get("task") if isinstance(answer, dict) else None
        if task is None:
            return failed_result(d, target, "the target answered with a message, not a task; is it a cortex-node?")
        return result_from_task(task, d, target)

    async def _expire(self, rpc_url: str, d: SwarmDirective) -> SwarmDirectiveResult:
        try:
            await self._ctl.cancel_task(rpc_url, d.directive_id, timeout=3.0)
        except (A2AError, PeerUnreachable, asyncio.TimeoutError):
            pass  # it may be finished or gone; the verdict here is timed_out either way
        return SwarmDirectiveResult(d.directive_id, d.target_node_id, DirectiveResultStatus.TIMED_OUT,
                                    error=f"no result within the TTL of {d.ttl_ms} ms")

    async def cancel(self, rpc_url: str, directive_id: str) -> None:
        """Ask the target to cancel a directive. Raises PeerUnreachable or A2AError."""
        await self._ctl.cancel_task(rpc_url, directive_id, timeout=CANCEL_TIMEOUT_S)

    async def heartbeat(self, rpc_url: str, params: dict[str, Any], timeout_s: float) -> Any:
        """One SwarmHeartbeat; the answer is the peer's membership digest. Raises PeerUnreachable
        or A2AError."""
        return await self._ctl.call(rpc_url, HEARTBEAT_METHOD, params, timeout_s)

    async def leave(self, rpc_url: str, node_id: str, reason: str) -> None:
        await self._ctl.call(rpc_url, LEAVE_METHOD, {"nodeId": node_id, "reason": reason}, LEAVE_TIMEOUT_S)

    async def control(self, rpc_url: str, params: dict[str, Any]) -> Any:
        """SwarmControl (drain, undrain, seal) on a peer. Raises PeerUnreachable or A2AError."""
        return await self._ctl.call(rpc_url, CONTROL_METHOD, params, CONTROL_TIMEOUT_S)
