"""The facade the rest of the program uses (DESIGN §4). One instance per node process."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any, Callable

from cortex_node.a2a.client import PeerUnreachable, normalize_base_url
from cortex_node.a2a.errors import A2AError
from cortex_node.a2a.handler import AgentCardInfo
from cortex_node.a2a.server import A2AServer
from cortex_node.clock import Clock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    REPORT_WINDOW_MS,
    SWARM_VERSION,
    DirectiveKind,
    DirectivePriority,
    DirectiveResultStatus,
    DirectiveStatus,
    SwarmDirective,
    SwarmDirectiveResult,
    format_ts,
    new_directive_id,
    parse_ts,
    to_wire,
    Lifecycle,
    NodeMetrics,
    NodeStatus,
    NodeTier,
    NodeUsage,
    SwarmNode,
    SwarmNodeRegistration,
    SwarmResourceReport,
    SwarmTopology,
    TopologyNode,
    new_node_id,
    ProcessInfo,
    ResourceCounters,
)
from cortex_node.kernel.agents import AgentRuntime
from cortex_node.kernel.process_table import OsKernel
from cortex_node.kernel.sampler import HostSample, HostSampler
from cortex_node.store.db import Store
from cortex_node.store.directives import DirectiveRepo
from cortex_node.store.snapshots import Snapshot
from cortex_node.swarm import ops_skill
from cortex_node.swarm.events import EventHub
from cortex_node.swarm.membership import CONTROL_METHOD, SWARM_EXTENSION_URI, Membership, registration_from_card
from cortex_node.swarm.remote_kernel import RemoteKernel
from cortex_node.swarm.directive_handler import DirectiveHandler
from cortex_node.swarm.node_registry import NodeRegistry
from cortex_node.swarm.transport import Transport

OUTBOUND = "outbound"

log = logging.getLogger("cortex.coordinator")

ONLINE_STATUSES = (NodeStatus.ONLINE, NodeStatus.CONNECTED, NodeStatus.DRAINING, NodeStatus.DEGRADED)


def parse_ts_or(text: str | None) -> int | None:
    try:
        return parse_ts(text) if text else None
    except ValueError:
        return None


def load_or_create_node_id(data_dir: Path, now_ms: int) -> str:
    """A node's id is created once and kept in its data directory."""
    path = data_dir / "node_id"
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = new_node_id(now_ms)
    tmp = path.with_name("node_id.tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    tmp.replace(path)
    return value


class Coordinator:
    def __init__(self, settings: NodeSettings, store: Store, clock: Clock, node_id: str) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.node_id = node_id
        self.boot_id = secrets.token_hex(6)
        self.started_at_ms = clock.now_ms()
        self.events = EventHub()
        self.registry = NodeRegistry(store, clock, self_id=node_id, stale_after_ms=settings.stale_after_ms,
                                     on_event=self.emit)
        self.directives = DirectiveRepo(store)
        self.kernel = OsKernel(node_id=node_id, clock=clock)
        self.sampler = HostSampler(settings.data_dir)
        self.shutdown_requested = asyncio.Event()
        self.heartbeat_stopped = False
        self.remote = RemoteKernel(clock)
        self.membership = Membership(self)
        self.agents = AgentRuntime(self.kernel, clock, settings.agents, tier=settings.tier)
        self.transport = Transport(clock, settings.token)
        self.handler = DirectiveHandler(
            settings=settings, store=store, clock=clock, node_id=node_id, agents=self.agents,
            lifecycle=lambda: self.lifecycle, resources=self.resources,
            ops_reply=lambda text: ops_skill.answer(self, text), extension_methods=self.extension_methods,
            on_event=self.emit,
        )
        self.a2a = A2AServer(self.handler, self.card_info, clock)
        self._inflight: dict[str, asyncio.Task] = {}
        self._drain_deadline: asyncio.Task | None = None
        self._host_sample: tuple[float, HostSample] | None = None
        self.loop_lag_s = 0.0  # how late the last sweep tick ran
        self.max_loop_lag_s = 0.0  # the longest stall seen since start

    # --- start and stop -------------------------------------------------------------------------
    async def start(self) -> SwarmNode:
        """Register, open the peer session, start the directive workers, pick up unfinished sends."""
        node = await self.register_self()
        await self.transport.connect()
        await self.handler.start()
        for row in await self.directives.unfinished(OUTBOUND):
            self._track(row["directiveId"], self._resume(row))
        return node

    async def stop(self, deadline_s: float = 10.0) -> None:
        """In-flight work finishes within the deadline; then everything is closed."""
        await self.handler.stop(deadline_s)
        await self.membership.stop()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=deadline_s)
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.transport.disconnect()

    def card_info(self) -> AgentCardInfo:
        s = self.settings
        return AgentCardInfo(
            name=s.name, description=f"Cortex Swarm node {s.name}: runs agents and tasks for its fleet",
            version=SWARM_VERSION, base_url=s.public_url, bearer_required=bool(s.token),
            skills=[
                {"id": "swarm-directives", "name": "Swarm directives",
                 "description": "Typed work from other swarm nodes: " + ", ".join(k.value for k in DirectiveKind),
                 "tags": ["swarm", "directive", "agents"], "inputModes": ["application/json"],
                 "outputModes": ["application/json"]},
                {"id": "swarm-ops", "name": "Swarm operations",
                 "description": "Plain-text questions about the fleet: " + ops_skill.HELP,
                 "tags": ["ops", "status", "fleet"], "examples": ["status", "nodes", "report", "topology", "help"]},
            ],
            extensions=[{"uri": SWARM_EXTENSION_URI, "required": False,
                         "description": "Swarm membership: heartbeats, membership digests and node control",
                         "params": {"nodeId": self.node_id, "group": s.group, "tier": s.tier.value,
                                    "methods": sorted(self.extension_methods())}}],
        )

    def extension_methods(self) -> dict[str, Any]:
        return self.membership.methods()

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.publish(kind, data)

    def resources(self) -> dict[str, Any]:
        """What query_resources answers: live metrics, per-agent counters, process count."""
        metrics, _ = self.sample_metrics(max_age_s=1.0)
        agents = [to_wire(p) for p in self.kernel.list() if p.role == "agent"]
        return {"nodeId": self.node_id, "name": self.settings.name, "metrics": to_wire(metrics),
                "processCount": self.kernel.active_processes(), "agents": agents,
                "totals": to_wire(self.kernel.counters())}

    # --- identity -------------------------------------------------------------------------------
    def self_registration(self) -> SwarmNodeRegistration:
        s = self.settings
        return SwarmNodeRegistration(
            id=self.node_id, name=s.name, endpoint=s.public_url, a2a_endpoint=f"{s.public_url}/a2a",
            tier=s.tier, capabilities=["heartbeat", "report", "topology"], version=SWARM_VERSION,
            group_name=s.group, labels=dict(s.labels), boot_id=self.boot_id,
        )

    async def register_self(self) -> SwarmNode:
        await self.registry.load()
        row = await self.registry.register(self.self_registration(), is_self=True)
        if row.lifecycle is Lifecycle.SEALED:
            # A sealed node that is started again rejoins, but a drained one stays drained until an
            # operator undrains it: a restart (SIGTERM seals) must not silently put it back into service.
            again = Lifecycle.DRAINING if row.drained else Lifecycle.ACTIVE
            row = await self.registry.set_lifecycle(self.node_id, again, "started again after seal")
        return self.registry.to_wire(row)

    @property
    def lifecycle(self) -> Lifecycle:
        return self.registry.get(self.node_id).lifecycle

    # --- reads ----------------------------------------------------------------------------------
    def get_node(self, node_id: str) -> SwarmNode:
        return self.registry.to_wire(self.registry.get(node_id))

    def list_nodes(self) -> list[SwarmNode]:
        now = self.clock.now_ms()
        return [self.registry.to_wire(r, now) for r in self.registry.list()]

    async def get_resource_report(self, window_ms: int = REPORT_WINDOW_MS) -> SwarmResourceReport:
        now = self.clock.now_ms()
        since = now - window_ms
        usage = await self.registry.snapshots.usage_since(since)
        per_node = []
        for row in self.registry.list():
            u = usage.get(row.id, {})
            per_node.append(NodeUsage(
                node_id=row.id, name=row.name, status=row.status, tokens_in=u.get("tokens_in", 0),
                tokens_out=u.get("tokens_out", 0), cost_usd=round(u.get("cost_usd", 0.0), 6),
                tool_calls=u.get("tool_calls", 0), cpu_ms=round(u.get("cpu_ms", 0.0), 1),
                peak_memory_mb=round(u.get("peak_memory_mb", 0.0), 1), snapshots=u.get("snapshots", 0),
            ))
        return SwarmResourceReport(
            window_start=format_ts(since), window_end=format_ts(now), total_nodes=len(per_node),
            online_nodes=sum(1 for n in per_node if n.status in ONLINE_STATUSES),
            total_tokens_in=sum(n.tokens_in for n in per_node),
            total_tokens_out=sum(n.tokens_out for n in per_node),
            total_cost_usd=round(sum(n.cost_usd for n in per_node), 6),
            total_tool_calls=sum(n.tool_calls for n in per_node),
            total_cpu_ms=round(sum(n.cpu_ms for n in per_node), 1),
            total_peak_memory_mb=round(sum(n.peak_memory_mb for n in per_node), 1),
            per_node=per_node,
        )

    def get_topology(self) -> SwarmTopology:
        procs = self.kernel.list() + self.remote.list()
        nodes = []
        for row in self.registry.list():
            mine = row.is_self
            counters = self.kernel.counters() if mine else None
            nodes.append(TopologyNode(
                id=row.id, name=row.name, is_self=mine, status=row.status,
                process_count=self.kernel.active_processes() if mine else row.metrics.active_processes,
                remote_process_count=0 if mine else self.remote.count_for(row.id),
                tokens_in=counters.tokens_in if counters else row.metrics.tokens_used_today,
                tokens_out=counters.tokens_out if counters else row.metrics.tokens_out_today,
                cost_usd=round(counters.cost_usd if counters else row.metrics.cost_usd_today, 6),
            ))
        return SwarmTopology(self_id=self.node_id, nodes=nodes, processes=procs)

    async def list_directives(self, status: DirectiveStatus | None, limit: int) -> list[dict[str, Any]]:
        return await self.directives.list(status, limit)

    # --- the heartbeat ---------------------------------------------------------------------------
    def sample_metrics(self, max_age_s: float = 0.0) -> tuple[NodeMetrics, Snapshot]:
        """Host figures from psutil (reused for ``max_age_s``: a sample costs ~150 µs, too much
        for every query_resources) plus the kernel's figures, always current."""
        now = self.clock.monotonic()
        if self._host_sample is None or now - self._host_sample[0] > max_age_s:
            self._host_sample = (now, self.sampler.sample())
        host = self._host_sample[1]
        k = self.kernel
        k.set_process_sample(1, host.own_cpu_ms, host.own_rss_mb)  # PID 1 is the daemon itself
        counters = k.counters()
        today = k.usage_today()
        uptime = (self.clock.now_ms() - self.started_at_ms) / 1000.0
        metrics = NodeMetrics(
            cpu_percent=host.cpu_percent, memory_used_mb=host.memory_used_mb, memory_total_mb=host.memory_total_mb,
            disk_used_mb=host.disk_used_mb, disk_total_mb=host.disk_total_mb,
            active_sessions=k.active_sessions(), active_processes=k.active_processes(),
            tokens_used_today=today.tokens_in, tokens_out_today=today.tokens_out,
            cost_usd_today=round(today.cost_usd, 6), uptime_seconds=round(uptime, 1),
        )
        snap = Snapshot(
            tokens_in=counters.tokens_in, tokens_out=counters.tokens_out, cost_usd=counters.cost_usd,
            tool_calls=counters.tool_calls, cpu_ms=round(counters.cpu_ms, 1), cpu_percent=host.cpu_percent,
            memory_used_mb=host.memory_used_mb, memory_total_mb=host.memory_total_mb,
            disk_used_mb=host.disk_used_mb, disk_total_mb=host.disk_total_mb,
            active_sessions=metrics.active_sessions, active_processes=metrics.active_processes,
            uptime_seconds=metrics.uptime_seconds,
        )
        return metrics, snap

    async def heartbeat(self) -> SwarmNode:
        """One beat: sample for real, update our row, append a snapshot, then send the same
        heartbeat to every known non-sealed peer and learn from their digests."""
        metrics, snap = self.sample_metrics()
        row = await self.registry.record_heartbeat(self.node_id, metrics, snap, boot_id=self.boot_id)
        if not self.heartbeat_stopped:
            await self.membership.fan_out(self.membership.heartbeat_payload(metrics, snap))
        return self.registry.to_wire(row)

    def note_loop_lag(self, lag_s: float) -> None:
        """Record how late the event loop ran. A long stall (a blocking handler, SIGSTOP, a
        suspended VM) gives every peer a fresh grace period instead of a false verdict."""
        self.loop_lag_s = max(0.0, lag_s)
        if lag_s * 1000 > min(1000, self.settings.heartbeat_interval_ms):
            self.max_loop_lag_s = max(self.max_loop_lag_s, lag_s)
            log.warning("the event loop was blocked for %.1f s; peers get a fresh grace period", lag_s)
            self.registry.grant_grace()

    async def sweep(self) -> list[str]:
        """Peers silent for longer than stale_after become disconnected; what they ran, unknown."""
        changed = await self.registry.sweep()
        for node_id in changed:
            self.membership.node_silent(node_id)
        return changed

    async def discover_peers(self, endpoints: list[str] | tuple[str, ...] = ()) -> list[str]:
        return await self.membership.discover_peers(endpoints)

    # --- dispatch -------------------------------------------------------------------------------
    async def resolve_target(self, *, node_id: str | None = None, endpoint: str | None = None) -> tuple[str, str]:
        """(node id, A2A URL) of a target named by id or by URL. A URL not yet in the registry has
        its card fetched and is registered on first contact. Raises LookupError with the reason."""
        if node_id:
            row = self.registry.nodes.get(node_id)
            if row is None:
                raise LookupError(f"unknown target node {node_id!r}; list nodes with GET /api/swarm/nodes")
            return row.id, row.a2a_endpoint or f"{row.endpoint}/a2a"
        if not endpoint:
            raise LookupError("name a target: targetNodeId, targetEndpoint or group")
        base = normalize_base_url(endpoint)
        row = self.registry.find_by_endpoint(base)
        if row is not None:
            return row.id, row.a2a_endpoint or f"{base}/a2a"
        try:
            card = await self.transport.fetch_remote_agent_card(base)
        except PeerUnreachable as exc:
            raise LookupError(f"target {base} is unreachable: {exc}") from None
        row = await self.registry.register(registration_from_card(card, base))
        return row.id, row.a2a_endpoint or f"{base}/a2a"

    async def dispatch(self, kind: DirectiveKind, payload: dict[str, Any], *, target_node_id: str | None = None,
                       target_endpoint: str | None = None, priority: DirectivePriority = DirectivePriority.NORMAL,
                       ttl_ms: int, parent_directive_id: str | None = None, wait: bool = True) -> dict[str, Any]:
        """Persist the directive (``dispatched``), send it, and record its terminal state exactly
        once. With ``wait`` False the row is returned at once and the send goes on in the background."""
        now = self.clock.now_ms()
        directive_id = new_directive_id(now)
        try:
            target_id, a2a_url = await self.resolve_target(node_id=target_node_id, endpoint=target_endpoint)
        except LookupError as exc:
            d = self._new_directive(directive_id, target_node_id or target_endpoint or "unknown", kind, payload,
                                    priority, ttl_ms, parent_directive_id, now)
            await self.store.write(lambda conn: DirectiveRepo.insert(conn, d, DirectiveStatus.DISPATCHED, OUTBOUND, now))
            return await self._record(SwarmDirectiveResult(directive_id, d.target_node_id,
                                                           DirectiveResultStatus.FAILED, error=str(exc)))
        d = self._new_directive(directive_id, target_id, kind, payload, priority, ttl_ms, parent_directive_id, now)
        await self.store.write(lambda conn: DirectiveRepo.insert(conn, d, DirectiveStatus.DISPATCHED, OUTBOUND, now))
        self.emit("directive.created", {"directiveId": directive_id, "kind": kind.value, "targetNodeId": target_id})
        task = self._track(directive_id, self._send(d, a2a_url))
        if wait:
            row = await asyncio.shield(task)
            if row is not None:
                return row
        return await self.directives.get(directive_id, OUTBOUND)

    async def broadcast(self, group: str, kind: DirectiveKind, payload: dict[str, Any], *,
                        priority: DirectivePriority = DirectivePriority.NORMAL, ttl_ms: int,
                        parent_directive_id: str | None = None, wait: bool = True) -> list[dict[str, Any]]:
        """One directive (and row) per live node of the group, sent concurrently."""
        targets = [r.id for r in self.registry.list()
                   if r.group_name == group and r.status in ONLINE_STATUSES]
        return list(await asyncio.gather(*(
            self.dispatch(kind, payload, target_node_id=t, priority=priority, ttl_ms=ttl_ms,
                          parent_directive_id=parent_directive_id, wait=wait) for t in targets)))

    async def cancel_directive(self, directive_id: str) -> dict[str, Any] | None:
        """Ask the target to cancel; the row ends ``cancelled`` unless it already ended."""
        row = await self.directives.get(directive_id, OUTBOUND)
        if row is None:
            return None
        if DirectiveStatus(row["status"]).terminal:
            return row
        target = self.registry.nodes.get(row["targetNodeId"])
        if target is not None:
            try:
                await self.transport.client.cancel_task(target.a2a_endpoint or f"{target.endpoint}/a2a", directive_id,
                                                        timeout=5.0)
            except Exception as exc:  # the target may be gone; the local verdict still stands
                log.info("cancel of %s on %s: %s", directive_id, target.name, exc)
        row = await self._record(SwarmDirectiveResult(directive_id, row["targetNodeId"],
                                                      DirectiveResultStatus.CANCELLED, error="cancelled by an operator"))
        inflight = self._inflight.get(directive_id)
        if inflight is not None:
            inflight.cancel()
        return row

    def _new_directive(self, directive_id: str, target: str, kind: DirectiveKind, payload: dict[str, Any],
                       priority: DirectivePriority, ttl_ms: int, parent: str | None, now: int) -> SwarmDirective:
        return SwarmDirective(directive_id=directive_id, source_node_id=self.node_id, target_node_id=target,
                              kind=kind, payload=payload, priority=priority, ttl_ms=ttl_ms, created_at=format_ts(now),
                              expires_at=format_ts(now + ttl_ms), parent_directive_id=parent)

    def _track(self, directive_id: str, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"dispatch-{directive_id}")
        self._inflight[directive_id] = task
        task.add_done_callback(lambda _t: self._inflight.pop(directive_id, None))
        return task

    async def _send(self, d: SwarmDirective, a2a_url: str) -> dict[str, Any] | None:
        expires = parse_ts_or(d.expires_at) or self.clock.now_ms() + d.ttl_ms
        timeout = max(0.001, (expires - self.clock.now_ms()) / 1000)
        result = await self.transport.send_directive(a2a_url, d, d.target_node_id, timeout)
        row = await self._record(result)
        await self.on_directive_result(d, result)
        return row

    async def _resume(self, row: dict[str, Any]) -> None:
        """A send that a crash interrupted: re-sent under the same id (the target deduplicates)
        while its TTL lasts, else recorded as timed out."""
        d = SwarmDirective(
            directive_id=row["directiveId"], source_node_id=row["sourceNodeId"], target_node_id=row["targetNodeId"],
            kind=DirectiveKind(row["kind"]), payload=row["payload"], priority=DirectivePriority(row["priority"]),
            ttl_ms=row["ttlMs"], created_at=row["createdAt"],
            expires_at=format_ts((parse_ts_or(row["createdAt"]) or 0) + row["ttlMs"]),
            parent_directive_id=row["parentDirectiveId"],
        )
        target = self.registry.nodes.get(d.target_node_id)
        if target is None or (parse_ts_or(d.expires_at) or 0) <= self.clock.now_ms():
            await self._record(SwarmDirectiveResult(d.directive_id, d.target_node_id, DirectiveResultStatus.TIMED_OUT,
                                                    error="the node restarted and the directive's TTL had passed"))
            return
        await self._send(d, target.a2a_endpoint or f"{target.endpoint}/a2a")

    async def _record(self, result: SwarmDirectiveResult) -> dict[str, Any] | None:
        """The one place an outbound directive's terminal state is written (once). Returns the
        row as it stands afterwards."""
        now = self.clock.now_ms()
        written, row = await self.store.write(lambda conn: DirectiveRepo.finish(
            conn, result.directive_id, OUTBOUND, DirectiveStatus(result.status.value), result.output, result.error,
            to_wire(result.metrics), now))
        if written:
            self.emit("directive.finished", {"directiveId": result.directive_id, "status": result.status.value,
                                             "role": OUTBOUND})
        return row

    async def on_directive_result(self, d: SwarmDirective, result: SwarmDirectiveResult) -> None:
        """A spawn_agent result puts the remote agent into our tree at once, under the
        dispatching process (the daemon, PID 1); heartbeats keep it current from then on."""
        out = result.output
        if d.kind is not DirectiveKind.SPAWN_AGENT or not isinstance(out, dict) or d.target_node_id == self.node_id:
            return
        if not isinstance(out.get("pid"), int):
            return
        m = result.metrics
        status = "running" if out.get("detached") else str(out.get("status") or "exited")
        proc = ProcessInfo(
            pid=out["pid"], parent_pid=None, name=str(out.get("agentType") or "agent"), role="agent", status=status,
            node_id=d.target_node_id, agent_id=out.get("agentId"), session_id=out.get("sessionId"),
            agent_type=out.get("agentType"), os_pid=out.get("osPid"), exit_code=out.get("exitCode"),
            resources=ResourceCounters(tokens_in=m.tokens_in, tokens_out=m.tokens_out, cost_usd=m.cost_usd,
                                       tool_calls=m.tool_calls),
        )
        local = self.remote.register_remote_process(d.target_node_id, proc, parent_pid=1)
        self.emit("process.started", {"pid": local.pid, "nodeId": d.target_node_id})

    # --- control --------------------------------------------------------------------------------
    async def control_node(self, node_id: str, action: str, reason: str,
                           deadline_s: float | None = None) -> SwarmNode | dict[str, Any]:
        """drain / undrain / seal of any node: ours directly, a peer's over A2A (it checks the
        swarm token like every call). Raises LookupError for an unknown node, PermissionError
        when the action is not possible now, RuntimeError when the peer cannot be reached."""
        if node_id == self.node_id:
            if action == "drain":
                return await self.drain(reason, deadline_s)
            return await getattr(self, action)(reason)
        row = self.registry.nodes.get(node_id)
        if row is None:
            raise LookupError(f"no node with id {node_id!r}; list them with GET /api/swarm/nodes")
        params: dict[str, Any] = {"action": action, "reason": reason}
        if deadline_s is not None:
            params["deadlineSeconds"] = deadline_s
        try:
            return await self.transport.client.call(row.a2a_endpoint or f"{row.endpoint}/a2a", CONTROL_METHOD,
                                                    params, timeout=10.0)
        except A2AError as exc:
            raise PermissionError(f"{row.name} ({node_id}) refused to {action}: {exc.message}") from None
        except PeerUnreachable as exc:
            raise RuntimeError(f"{action} of {row.name} ({node_id}) failed: {exc}") from None

    async def drain(self, reason: str = "operator", deadline_s: float | None = None) -> SwarmNode:
        """No new work; in-flight work finishes. With a deadline, what still runs then is cancelled."""
        if self.lifecycle is Lifecycle.SEALED:
            raise PermissionError("the node is sealed; it is shutting down")
        row = await self.registry.set_lifecycle(self.node_id, Lifecycle.DRAINING, reason)
        self.membership.beat_now.set()  # peers learn it now, not at the next interval
        if deadline_s is not None:
            if self._drain_deadline is not None:
                self._drain_deadline.cancel()
            self._drain_deadline = asyncio.create_task(self._cancel_at_drain_deadline(deadline_s))
        return self.registry.to_wire(row)

    async def _cancel_at_drain_deadline(self, deadline_s: float) -> None:
        await self.clock.sleep(deadline_s)
        if self.lifecycle is Lifecycle.DRAINING:
            cancelled = await self.handler.cancel_all(f"cancelled at the drain deadline ({deadline_s:g} s)")
            log.info("drain deadline reached: %d directive(s) cancelled", cancelled)

    async def undrain(self, reason: str = "operator") -> SwarmNode:
        if self.lifecycle is Lifecycle.SEALED:
            raise PermissionError("the node is sealed; it is shutting down")
        row = await self.registry.set_lifecycle(self.node_id, Lifecycle.ACTIVE, reason)
        self.membership.beat_now.set()
        return self.registry.to_wire(row)

    async def seal(self, reason: str = "operator") -> SwarmNode:
        """Stop taking work, stop the heartbeat, persist ``sealed`` and ask the daemon to exit 0.
        In-flight work is finished by the app's shutdown before the process ends."""
        self.heartbeat_stopped = True
        row = await self.registry.set_lifecycle(self.node_id, Lifecycle.SEALED, reason)
        await self.membership.leave(reason)
        self.shutdown_requested.set()
        return self.registry.to_wire(row)
