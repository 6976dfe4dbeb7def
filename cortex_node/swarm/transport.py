"""Directives over A2A: the envelope both ways, and the node's one pooled HTTP session to peers.

A directive travels as an A2A message (DESIGN §5): ``metadata`` carries ``swarmKind``,
``swarmPriority``, ``swarmSourceNodeId``, ``swarmDirectiveId``, ``swarmTtlMs``; ``contextId`` is
``swarm.<directiveId>``; the directive itself is a ``data`` part. The older CortexPrism form, a
``text`` part holding ``{kind, payload, priority, sourceNodeId}``, is accepted on receipt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from cortex_node.a2a.client import A2AClient, PeerUnreachable, normalize_base_url
from cortex_node.a2a.errors import A2AError
from cortex_node.a2a.wire import data_part, make_message
from cortex_node.clock import Clock
from cortex_node.contracts import (
    DEFAULT_TTL_MS,
    DirectiveKind,
    DirectiveMetrics,
    DirectivePriority,
    DirectiveResultStatus,
    SwarmDirective,
    SwarmDirectiveResult,
    MAX_JSON_DEPTH,
    WireError,
    format_ts,
    from_wire,
    json_depth_exceeds,
    parse_ts,
    to_wire,
)

log = logging.getLogger("cortex.transport")

CARD_TTL_S = 60.0
RESULT_ARTIFACT = "directive-result"
MAX_TTL_MS = 24 * 3600 * 1000


_METADATA_KEYS = (("kind", "swarmKind"), ("priority", "swarmPriority"), ("sourceNodeId", "swarmSourceNodeId"),
                  ("directiveId", "swarmDirectiveId"), ("ttlMs", "swarmTtlMs"))


_KINDS = frozenset(k.value for k in DirectiveKind)


class EnvelopeError(ValueError):
    """A message that claims to be a directive but is malformed; the text says which field."""


def directive_to_message(d: SwarmDirective) -> dict[str, Any]:
    return make_message(
        "ROLE_USER", [data_part(to_wire(d))], message_id=f"msg.{d.directive_id}", context_id=f"swarm.{d.directive_id}",
        metadata={
            "swarmKind": d.kind.value, "swarmPriority": d.priority.value, "swarmSourceNodeId": d.source_node_id,
            "swarmDirectiveId": d.directive_id, "swarmTtlMs": d.ttl_ms,
        },
    )


def message_to_directive(message: dict[str, Any], *, target_node_id: str, now_ms: int) -> SwarmDirective | None:
    """The directive a message carries, or None for an ordinary message (plain text for the
    swarm-ops skill). Raises EnvelopeError for a malformed directive."""
    meta = message.get("metadata") or {}
    parts = message.get("parts") or []
    doc: dict[str, Any] | None = None
    if isinstance(meta, dict) and "swarmKind" in meta:
        doc = next((p["data"] for p in parts if isinstance(p.get("data"), dict)), None)
        doc = dict(doc or {})
        for key, meta_key in _METADATA_KEYS:
            if meta.get(meta_key) is not None:
                doc.setdefault(key, meta[meta_key])
    else:
        doc = _legacy_envelope(parts)
        if doc is None:
            return None
    if not doc.get("directiveId"):
        # the legacy form has no id: the message id names it, so a resend is still a replay
        doc["directiveId"] = f"dir_{message.get('messageId', '')}".rstrip("_")
    doc.setdefault("targetNodeId", target_node_id)
    doc.setdefault("sourceNodeId", "unknown")
    doc.setdefault("priority", "normal")
    doc.setdefault("ttlMs", DEFAULT_TTL_MS)
    doc.setdefault("createdAt", format_ts(now_ms))
    try:
        d = from_wire(SwarmDirective, doc, "directive")
    except WireError as exc:
        raise EnvelopeError(str(exc)) from None
    if json_depth_exceeds(d.payload):
        raise EnvelopeError(f"directive.payload nests deeper than {MAX_JSON_DEPTH} levels")
    for name, value in (("createdAt", d.created_at), ("expiresAt", d.expires_at)):
        if value is not None:
            try:
                parse_ts(value)
            except (ValueError, OverflowError):
                raise EnvelopeError(f"directive.{name} must be an ISO 8601 timestamp such as "
                                    f"2026-11-26T10:00:00Z; got {value[:40]!r}") from None
    if not 1 <= d.ttl_ms <= MAX_TTL_MS:
        raise EnvelopeError(f"directive.ttlMs must be from 1 to {MAX_TTL_MS}; got {d.ttl_ms}")
    if not d.directive_id or len(d.directive_id) > 128:
        raise EnvelopeError("directive.directiveId must be a non-empty string of at most 128 characters")
    return d


def _legacy_envelope(parts: list[Any]) -> dict[str, Any] | None:
    for part in parts:
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str) or not text.lstrip().startswith("{"):
            continue
        try:
            env = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not isinstance(env, dict) or not isinstance(env.get("kind"), str) or env["kind"] not in _KINDS:
            continue
        payload = env.get("payload", {})
        if isinstance(payload, str):  # older senders double-encoded the payload
            try:
                payload = json.loads(payload)
            except (ValueError, RecursionError):
                raise EnvelopeError("directive.payload is a string that is not JSON (or nests too deep)") from None
        doc = {"kind": env["kind"], "payload": payload, "priority": env.get("priority", "normal"),
               "sourceNodeId": env.get("sourceNodeId")}
        for key in ("directiveId", "ttlMs", "parentDirectiveId"):
            if key in env:
                doc[key] = env[key]
        return doc
    return None


def result_from_task(task: dict[str, Any], directive: SwarmDirective, target_node_id: str) -> SwarmDirectiveResult:
    """Read the directive result the target put in the task's artifact; a REJECTED task or one
    without a result becomes ``failed`` with the reason."""
    for artifact in task.get("artifacts") or []:
        for part in artifact.get("parts") or []:
            data = part.get("data")
            if isinstance(data, dict) and data.get("directiveId") == directive.directive_id and "status" in data:
                try:
                    return from_wire(SwarmDirectiveResult, data, "result")
                except WireError as exc:
                    return _failed(directive, target_node_id, f"the target sent a malformed result: {exc}")
    status = task.get("status") or {}
    state = status.get("state", "")
    reason = _status_text(status) or state
    if state == "TASK_STATE_REJECTED":
        return _failed(directive, target_node_id, f"rejected by the target: {reason}")
    if state == "TASK_STATE_CANCELED":
        return SwarmDirectiveResult(directive.directive_id, target_node_id, DirectiveResultStatus.CANCELLED,
                                    error=reason)
    return _failed(directive, target_node_id, f"the target ended the task ({state}) without a result: {reason}")


def _status_text(status: dict[str, Any]) -> str:
    msg = status.get("message") or {}
    texts = [p["text"] for p in msg.get("parts") or [] if isinstance(p.get("text"), str)]
    datas = [p["data"] for p in msg.get("parts") or [] if isinstance(p.get("data"), dict)]
    reason = next((d.get("reason") for d in datas if d.get("reason")), None)
    return " ".join(x for x in [reason, *texts] if x)


def _failed(d: SwarmDirective, node_id: str, error: str) -> SwarmDirectiveResult:
    return SwarmDirectiveResult(d.directive_id, node_id, DirectiveResultStatus.FAILED, error=error,
                                metrics=DirectiveMetrics())


@dataclass
class _CachedCard:
    card: dict[str, Any]
    fetched_at: float


class Transport:
    """One pooled aiohttp session per node for everything it sends to peers."""

    def __init__(self, clock: Clock, token: str | None, *, pool_size: int = 100) -> None:
        self.clock = clock
        self.token = token
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._client: A2AClient | None = None
        self._cards: dict[str, _CachedCard] = {}

    async def connect(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size // 2 or 1)
            self._session = aiohttp.ClientSession(connector=connector)
            self._client = A2AClient(self._session, self.token)

    async def disconnect(self) -> None:
        if self._session is not None:
            session, self._session, self._client = self._session, None, None
            await session.close()

    @property
    def client(self) -> A2AClient:
        if self._client is None:
            raise RuntimeError("transport is not connected")
        return self._client

    async def fetch_remote_agent_card(self, url: str, *, fresh: bool = False) -> dict[str, Any]:
        """The peer's agent card, cached for a minute. Raises PeerUnreachable."""
        base = normalize_base_url(url)
        cached = self._cards.get(base)
        if cached and not fresh and self.clock.monotonic() - cached.fetched_at < CARD_TTL_S:
            return cached.card
        card = await self.client.fetch_card(base)
        self._cards[base] = _CachedCard(card, self.clock.monotonic())
        return card

    async def ping(self, a2a_url: str, timeout: float = 3.0) -> float:
        """Round-trip seconds of a cheap JSON-RPC call. Raises PeerUnreachable."""
        start = self.clock.monotonic()
        try:
            await self.client.call(a2a_url, "ListTasks", {"pageSize": 1}, timeout=timeout)
        except A2AError:
            pass  # an answer, even an error, is a live peer
        return self.clock.monotonic() - start

    async def send_directive(self, a2a_url: str, d: SwarmDirective, target_node_id: str,
                             timeout_s: float) -> SwarmDirectiveResult:
        """Send and wait (blocking SendMessage) for the terminal state within ``timeout_s``.
        On expiry the task is cancelled on the target and the result is ``timed_out``; an
        unreachable target is ``failed`` with the reason. Never hangs, never raises for the peer."""
        message = directive_to_message(d)
        try:
            # our own deadline fires first, so a TTL expiry is told apart from a dead connection
            result = await asyncio.wait_for(self.client.send_message(a2a_url, message, timeout=timeout_s + 5), timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            return await self._expire(a2a_url, d, target_node_id)
        except PeerUnreachable as exc:
            return _failed(d, target_node_id, f"node unreachable: {exc}")
        except A2AError as exc:
            return _failed(d, target_node_id, f"the target refused the directive ({exc.code}): {exc.message}")
        task = result.get("task") if isinstance(result, dict) else None
        if task is None:
            return _failed(d, target_node_id, "the target answered with a message, not a task; is it a cortex-node?")
        return result_from_task(task, d, target_node_id)

    async def _expire(self, a2a_url: str, d: SwarmDirective, target_node_id: str) -> SwarmDirectiveResult:
        try:
            await self.client.cancel_task(a2a_url, d.directive_id, timeout=3.0)
        except (A2AError, PeerUnreachable, asyncio.TimeoutError):
            pass  # it may be finished or gone; the verdict here is timed_out either way
        return SwarmDirectiveResult(d.directive_id, target_node_id, DirectiveResultStatus.TIMED_OUT,
                                    error=f"no result within the TTL of {d.ttl_ms} ms", metrics=DirectiveMetrics())


def parse_priority(value: Any) -> DirectivePriority:
    return DirectivePriority.parse(value or "normal", "priority")  # type: ignore[return-value]
