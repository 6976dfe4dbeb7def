"""The sending side of directives: resolve the target, open the outbound row, send, track,
record the terminal state once.

A target is a node id, a URL (its card is fetched and the node registered on first contact) or
a group (one directive per live node of it, sent concurrently). The send waits for the target's
terminal state within the TTL; at expiry the target is told to cancel and the row ends
``timed_out``. Sends that a crash interrupted are resumed at start under the same id.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any, Callable, Coroutine

from cortex_node.a2a.client import PeerUnreachable, normalize_base_url
from cortex_node.clock import Clock
from cortex_node.contracts import (
    DirectiveKind,
    DirectiveRecord,
    DirectiveResultStatus,
    DirectiveRole,
    DirectiveStatus,
    DispatchRequest,
    ProcessInfo,
    ProcessStatus,
    SpawnAgentOutput,
    SwarmDirective,
    SwarmDirectiveResult,
    WireError,
    format_ts,
    from_wire,
    new_directive_id,
    parse_ts,
    Usage,
    project,
)
from cortex_node.store.nodes import NodeRow
from cortex_node.swarm.ledger import DirectiveLedger
from cortex_node.swarm.membership import registration_from_card
from cortex_node.swarm.node_registry import ForeignClaim, NodeRegistry
from cortex_node.swarm.peers import Peers
from cortex_node.swarm.remote_kernel import RemoteKernel

log = logging.getLogger("cortex.dispatch")

OUTBOUND = DirectiveRole.OUTBOUND
DAEMON_PID = 1  # a remote agent we started hangs under the process that dispatched it: the daemon


class Dispatcher:
    def __init__(self, *, node_id: str, clock: Clock, registry: NodeRegistry, peers: Peers, ledger: DirectiveLedger,
                 remote: RemoteKernel, on_event: Callable[[str, dict], None]) -> None:
        self._node_id = node_id
        self._clock = clock
        self._registry = registry
        self._peers = peers
        self._ledger = ledger
        self._remote = remote
        self._on_event = on_event
        self._inflight: dict[str, asyncio.Task] = {}

    async def resume(self) -> None:
        """Pick up the sends a crash interrupted."""
        for record in await self._ledger.unfinished(OUTBOUND):
            self._track(record.directive_id, self._resume(record))

    async def stop(self, deadline_s: float) -> None:
        """Sends under way get the deadline to finish; the rest are cancelled."""
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=deadline_s)
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    # --- targets --------------------------------------------------------------------------------
    async def resolve_target(self, *, node_id: str | None = None, endpoint: str | None = None) -> NodeRow:
        """The registry row of a target named by id or by URL. A URL not yet in the registry has
        its card fetched and is registered on first contact. Raises LookupError with the reason."""
        if node_id:
            row = self._registry.find(node_id)
            if row is None:
                raise LookupError(f"unknown target node {node_id!r}; list nodes with GET /api/swarm/nodes")
            return row
        if not endpoint:
            raise LookupError("name a target: targetNodeId, targetEndpoint or group")
        base = normalize_base_url(endpoint)
        row = self._registry.find_by_endpoint(base)
        if row is not None:
            return row
        try:
            card = await self._peers.card(base)
        except PeerUnreachable as exc:
            raise LookupError(f"target {base} is unreachable: {exc}") from None
        reg = registration_from_card(card, base)
        if reg.id == self._node_id:
            return self._registry.get(self._node_id)  # ourselves under another name of ours
        try:
            return await self._registry.register(reg)
        except ForeignClaim as exc:
            raise LookupError(f"target {base} is not usable: {exc}") from None

    def group_targets(self, group: str) -> list[str]:
        """The live nodes of a group: the targets of a broadcast."""
        return [r.id for r in self._registry.list() if r.group_name == group and r.status.is_live]

    # --- sending --------------------------------------------------------------------------------
    async def dispatch(self, request: DispatchRequest) -> DirectiveRecord:
        """Persist the directive (``dispatched``), send it, and record its terminal state exactly
        once. With ``request.wait`` False the row is returned at once and the send goes on."""
        now = self._clock.now_ms()
        directive_id = new_directive_id(now)
        try:
            target = await self.resolve_target(node_id=request.target_node_id, endpoint=request.target_endpoint)
        except LookupError as exc:
            d = self._directive(directive_id, request.target_node_id or request.target_endpoint or "unknown",
                                request, now)
            await self._ledger.open(d, OUTBOUND, DirectiveStatus.DISPATCHED)
            return await self._ledger.record(OUTBOUND, SwarmDirectiveResult(
                directive_id, d.target_node_id, DirectiveResultStatus.FAILED, error=str(exc)))
        d = self._directive(directive_id, target.id, request, now)
        await self._ledger.open(d, OUTBOUND, DirectiveStatus.DISPATCHED)
        self._on_event("directive.created", {"directiveId": directive_id, "kind": d.kind.value,
                                             "targetNodeId": target.id})
        task = self._track(directive_id, self._send(d, target.rpc_url))
        if request.wait:
            record = await asyncio.shield(task)
            if record is not None:
                return record
        return await self._ledger.get(directive_id, OUTBOUND)

    async def broadcast(self, request: DispatchRequest) -> list[DirectiveRecord]:
        """One directive (and row) per live node of the group, sent concurrently."""
        return list(await asyncio.gather(*(
            self.dispatch(_for_target(request, node_id)) for node_id in self.group_targets(request.group or ""))))

    async def cancel(self, directive_id: str) -> DirectiveRecord | None:
        """Ask the target to cancel; the row ends ``cancelled`` unless it already ended."""
        record = await self._ledger.get(directive_id, OUTBOUND)
        if record is None or record.status.terminal:
            return record
        target = self._registry.find(record.target_node_id)
        if target is not None:
            try:
                await self._peers.cancel(target.rpc_url, directive_id)
            except Exception as exc:  # the target may be gone; the local verdict still stands
                log.info("cancel of %s on %s: %s", directive_id, target.name, exc)
        record = await self._ledger.record(OUTBOUND, SwarmDirectiveResult(
            directive_id, record.target_node_id, DirectiveResultStatus.CANCELLED, error="cancelled by an operator"))
        inflight = self._inflight.get(directive_id)
        if inflight is not None:
            inflight.cancel()
        return record

    def _directive(self, directive_id: str, target: str, r: DispatchRequest, now: int) -> SwarmDirective:
        return SwarmDirective(directive_id=directive_id, source_node_id=self._node_id, target_node_id=target,
                              kind=r.kind, payload=r.payload, priority=r.priority, ttl_ms=r.ttl_ms,
                              created_at=format_ts(now), expires_at=format_ts(now + r.ttl_ms),
                              parent_directive_id=r.parent_directive_id)

    def _track(self, directive_id: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"dispatch-{directive_id}")
        self._inflight[directive_id] = task
        task.add_done_callback(lambda _t: self._inflight.pop(directive_id, None))
        return task

    async def _send(self, d: SwarmDirective, rpc_url: str) -> DirectiveRecord | None:
        expires = _ms(d.expires_at) or self._clock.now_ms() + d.ttl_ms
        timeout = max(0.001, (expires - self._clock.now_ms()) / 1000)
        result = await self._peers.send_directive(rpc_url, d, timeout)
        record = await self._ledger.record(OUTBOUND, result)
        self._place_remote_agent(d, result)
        return record

    async def _resume(self, record: DirectiveRecord) -> None:
        """A send that a crash interrupted: re-sent under the same id (the target deduplicates)
        while its TTL lasts, else recorded as timed out."""
        d = SwarmDirective(
            directive_id=record.directive_id, source_node_id=record.source_node_id,
            target_node_id=record.target_node_id, kind=record.kind, payload=record.payload,
            priority=record.priority, ttl_ms=record.ttl_ms, created_at=record.created_at,
            expires_at=format_ts((_ms(record.created_at) or 0) + record.ttl_ms),
            parent_directive_id=record.parent_directive_id,
        )
        target = self._registry.find(d.target_node_id)
        if target is None or (_ms(d.expires_at) or 0) <= self._clock.now_ms():
            await self._ledger.record(OUTBOUND, SwarmDirectiveResult(
                d.directive_id, d.target_node_id, DirectiveResultStatus.TIMED_OUT,
                error="the node restarted and the directive's TTL had passed"))
            return
        await self._send(d, target.rpc_url)

    def _place_remote_agent(self, d: SwarmDirective, result: SwarmDirectiveResult) -> None:
        """A spawn_agent result puts the remote agent into our tree at once, under the daemon;
        heartbeats keep it current from then on."""
        if d.kind is not DirectiveKind.SPAWN_AGENT or d.target_node_id == self._node_id:
            return
        try:
            out = from_wire(SpawnAgentOutput, result.output, "output")
        except WireError:
            return  # failed before the agent existed, or not a cortex-node's answer
        status = ProcessStatus.RUNNING if out.detached else out.status or ProcessStatus.EXITED
        proc = ProcessInfo(
            pid=out.pid, parent_pid=None, name=out.agent_type or "agent", role="agent", status=status,
            node_id=d.target_node_id, agent_id=out.agent_id, session_id=out.session_id,
            agent_type=out.agent_type, os_pid=out.os_pid, exit_code=out.exit_code,
            resources=project(Usage, result.metrics),
        )
        local = self._remote.register_remote_process(d.target_node_id, proc, parent_pid=DAEMON_PID)
        self._on_event("process.started", {"pid": local.pid, "nodeId": d.target_node_id})


def _for_target(request: DispatchRequest, node_id: str) -> DispatchRequest:
    return replace(request, group=None, target_node_id=node_id)


def _ms(text: str | None) -> int | None:
    try:
        return parse_ts(text) if text else None
    except ValueError:
        return None
