"""The facade the rest of the program uses (DESIGN §4). One instance per node process.

The coordinator composes the node's collaborators (registry, peers, membership, dispatcher,
work queue, ledger, kernels, state sync, change feed) and keeps them private: routes, metrics,
the ops skill and the app ask it questions (``list_nodes``, ``queue_figures``, ``health``…) and
give it orders (``dispatch``, ``drain``, ``seal``…); none of them reaches through it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from cortex_node.a2a.handler import AgentCardInfo
from cortex_node.a2a.server import A2AServer
from cortex_node.clock import Clock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    REPORT_WINDOW_MS,
    SWARM_VERSION,
    DirectiveKind,
    DirectiveRecord,
    DirectiveStatus,
    DispatchRequest,
    Health,
    InboxMessage,
    Lifecycle,
    NodeHistoryEntry,
    NodeLoad,
    NodeMetrics,
    NodeUsage,
    QueueFigures,
    Snapshot,
    StateRecord,
    SwarmNode,
    SwarmNodeRegistration,
    SwarmResourceReport,
    SwarmTopology,
    TopologyNode,
    Usage,
    format_ts,
    new_node_id,
    to_wire,
)
from cortex_node.kernel.agents import AgentRuntime
from cortex_node.kernel.children import reap_orphans
from cortex_node.kernel.process_table import OsKernel
from cortex_node.kernel.sampler import HostSample, HostSampler
from cortex_node.store.db import Store
from cortex_node.store.history import NodeHistoryRepo
from cortex_node.store.messages import MessageRepo
from cortex_node.store.snapshots import SnapshotRepo
from cortex_node.swarm import ops_skill
from cortex_node.swarm.change_feed import ChangeFeed, Subscription
from cortex_node.swarm.dispatcher import Dispatcher
from cortex_node.swarm.kinds import KindContext
from cortex_node.swarm.ledger import DirectiveLedger
from cortex_node.swarm.membership import SWARM_EXTENSION_URI, Membership, heartbeat_payload
from cortex_node.swarm.node_registry import NodeRegistry
from cortex_node.swarm.peers import Peers
from cortex_node.swarm.remote_kernel import RemoteKernel
from cortex_node.swarm.state_sync import StateSync, state_record
from cortex_node.swarm.work_queue import WorkQueue

log = logging.getLogger("cortex.coordinator")

USAGE_PRUNE_INTERVAL_MS = 3_600_000  # hourly usage buckets are pruned about once an hour
CHILDREN_DIR = "children"  # in the data directory: one record per live command or agent (kernel/children.py)


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
        self.clock = clock
        self.node_id = node_id
        self.boot_id = secrets.token_hex(6)
        self.started_at_ms = clock.now_ms()
        self.shutdown_requested = asyncio.Event()
        self.heartbeat_stopped = False
        self.loop_lag_s = 0.0  # how late the last sweep tick ran
        self.max_loop_lag_s = 0.0  # the longest stall seen since start
        self._store = store
        self._feed = ChangeFeed()
        self._registry = NodeRegistry(store, clock, self_id=node_id, stale_after_ms=settings.stale_after_ms,
                                      on_event=self._emit, max_nodes=settings.max_nodes,
                                      forget_after_ms=settings.forget_after_ms)
        self._snapshots: SnapshotRepo = self._registry.snapshots
        self._kernel = OsKernel(node_id=node_id, clock=clock)
        self._sampler = HostSampler(settings.data_dir)
        self._host_sample: tuple[float, HostSample] | None = None
        self._remote = RemoteKernel(clock)
        self._peers = Peers(clock, settings.token)
        self._ledger = DirectiveLedger(store, clock, self._emit)
        self._inbox = MessageRepo(store)
        self._state = StateSync(store, clock, node_id)
        self._membership = Membership(
            settings=settings, node_id=node_id, boot_id=self.boot_id, clock=clock, registry=self._registry,
            peers=self._peers, remote=self._remote, control_self=self._control_self, on_event=self._emit)
        self._dispatcher = Dispatcher(node_id=node_id, clock=clock, registry=self._registry, peers=self._peers,
                                      ledger=self._ledger, remote=self._remote, on_event=self._emit)
        agents = AgentRuntime(self._kernel, clock, settings.agents, tier=settings.tier,
                              allowed_env=settings.allowed_env, max_agents=settings.max_agents,
                              state_dir=settings.data_dir / CHILDREN_DIR)
        self._work = WorkQueue(
            KindContext(node_id=node_id, settings=settings, clock=clock, agents=agents, store=store,
                        inbox=self._inbox, state=self._state),
            self._ledger, lifecycle=lambda: self.lifecycle, resources=self.resources,
            ops_reply=lambda text: ops_skill.answer(self, text), on_event=self._emit, max_queued=settings.max_queued)
        self._a2a = A2AServer(self._work, self.card_info, clock, extension_methods=self._membership.methods())
        self._drain_deadline: asyncio.Task | None = None
        self._usage_pruned_at_ms = 0
        self._stopped = False

    # --- start and stop -------------------------------------------------------------------------
    async def open_store(self) -> None:
        """Open the database (raises StoreError saying why it cannot be used)."""
        await self._store.open()

    async def close_store(self) -> None:
        await self._store.close()

    async def start(self) -> SwarmNode:
        """Register, end what a kill -9 of the previous run left running, open the peer client,
        start the directive workers, pick up unfinished sends."""
        node = await self.register_self()
        await self._end_orphans()
        await self._peers.connect()
        await self._work.start()
        await self._dispatcher.resume()
        return node

    async def _end_orphans(self) -> None:
        """Commands and agents that outlived a kill -9 of this node's previous run are ended
        before any new work starts; each goes into the node's history (and its log)."""
        ended = await reap_orphans(self.settings.data_dir / CHILDREN_DIR)
        if ended:
            now = self.clock.now_ms()

            def write(conn) -> None:
                for line in ended:
                    NodeHistoryRepo.add(conn, self.node_id, "orphan_ended", line, now)

            await self._store.write(write)

    async def stop(self, deadline_s: float = 10.0) -> None:
        """In-flight work finishes within the deadline; then everything is closed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._work.stop(deadline_s)
        await self._membership.stop()
        await self._dispatcher.stop(deadline_s)
        await self._peers.close()

    def a2a_routes(self) -> list[web.RouteDef]:
        """The A2A endpoints (agent card, JSON-RPC) for the node's application."""
        return self._a2a.routes()

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
                                    "methods": sorted(self._membership.methods())}}],
        )

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self._feed.publish(kind, data)

    def subscribe(self) -> Subscription:
        """The change feed (node status, heartbeats, directives, processes) for one listener."""
        return self._feed.subscribe()

    def resources(self) -> dict[str, Any]:
        """What query_resources answers: live metrics, per-agent counters, process count."""
        metrics, _ = self.sample_metrics(max_age_s=1.0)
        agents = [to_wire(p) for p in self._kernel.list() if p.role == "agent"]
        return {"nodeId": self.node_id, "name": self.settings.name, "metrics": to_wire(metrics),
                "processCount": self._kernel.active_processes(), "agents": agents,
                "totals": to_wire(self._kernel.counters())}

    # --- identity -------------------------------------------------------------------------------
    def self_registration(self) -> SwarmNodeRegistration:
        s = self.settings
        return SwarmNodeRegistration(
            id=self.node_id, name=s.name, endpoint=s.public_url, a2a_endpoint=f"{s.public_url}/a2a",
            tier=s.tier, capabilities=["heartbeat", "report", "topology"], version=SWARM_VERSION,
            group_name=s.group, labels=dict(s.labels), boot_id=self.boot_id,
        )

    async def register_self(self) -> SwarmNode:
        await self._registry.load()
        row = await self._registry.register(self.self_registration(), is_self=True)
        if row.lifecycle is Lifecycle.SEALED:
            # A sealed node that is started again rejoins, but a drained one stays drained until an
            # operator undrains it: a restart (SIGTERM seals) must not silently put it back into service.
            again = Lifecycle.DRAINING if row.drained else Lifecycle.ACTIVE
            row = await self._registry.set_lifecycle(self.node_id, again, "started again after seal")
        return self._registry.to_wire(row)

    @property
    def lifecycle(self) -> Lifecycle:
        return self._registry.get(self.node_id).lifecycle

    # --- reads ----------------------------------------------------------------------------------
    def has_node(self, node_id: str) -> bool:
        return self._registry.has(node_id)

    def get_node(self, node_id: str) -> SwarmNode:
        return self._registry.to_wire(self._registry.get(node_id))

    def list_nodes(self) -> list[SwarmNode]:
        now = self.clock.now_ms()
        return [self._registry.to_wire(r, now) for r in self._registry.list()]

    def health(self) -> Health:
        """What /healthz answers."""
        me = self._registry.get(self.node_id)
        return Health(ok=True, node_id=self.node_id, name=me.name, status=me.status, version=SWARM_VERSION,
                      uptime_seconds=round((self.clock.now_ms() - self.started_at_ms) / 1000, 1),
                      queue=self.queue_figures(), loop_lag_seconds=round(self.loop_lag_s, 3))

    def queue_figures(self) -> QueueFigures:
        """The receiving side's queue: waiting, running, and the size of the worker pool."""
        return self._work.figures()

    def remote_process_count(self, node_id: str) -> int:
        return self._remote.count_for(node_id)

    async def node_series(self, node_id: str, limit: int, since_ms: int | None = None) -> list[dict[str, Any]]:
        """A node's snapshot series, oldest first."""
        return await self._snapshots.series(node_id, limit, since_ms)

    async def node_history(self, node_id: str, limit: int) -> list[NodeHistoryEntry]:
        """A node's recent history (registered, restarted, disconnected…), newest first."""
        return await self._registry.history.list(node_id, limit)

    async def get_resource_report(self, window_ms: int = REPORT_WINDOW_MS) -> SwarmResourceReport:
        now = self.clock.now_ms()
        since = now - window_ms
        usage = await self._snapshots.usage_since(since)
        per_node = []
        total = Usage()
        for row in self._registry.list():
            used, samples = usage.get(row.id, (Usage(), 0))
            line = NodeUsage(node_id=row.id, name=row.name, status=row.status, snapshots=samples, **vars(used.rounded()))
            per_node.append(line)
            total.add(line)
        total = total.rounded()
        return SwarmResourceReport(
            window_start=format_ts(since), window_end=format_ts(now), total_nodes=len(per_node),
            online_nodes=sum(1 for n in per_node if n.status.is_live),
            total_tokens_in=total.tokens_in, total_tokens_out=total.tokens_out, total_cost_usd=total.cost_usd,
            total_tool_calls=total.tool_calls, total_cpu_ms=total.cpu_ms,
            # the fleet's memory: what its nodes' peaks add up to (one node's peak is a maximum)
            total_peak_memory_mb=round(sum(n.peak_memory_mb for n in per_node), 1), per_node=per_node,
        )

    def get_topology(self) -> SwarmTopology:
        procs = self._kernel.list() + self._remote.list()
        nodes = []
        for row in self._registry.list():
            mine = row.is_self
            used = self._kernel.counters() if mine else row.metrics.today
            nodes.append(TopologyNode(
                id=row.id, name=row.name, is_self=mine, status=row.status,
                process_count=self._kernel.active_processes() if mine else row.metrics.active_processes,
                remote_process_count=0 if mine else self._remote.count_for(row.id),
                **vars(used.usage().rounded()),
            ))
        return SwarmTopology(self_id=self.node_id, nodes=nodes, processes=procs)

    async def list_directives(self, status: DirectiveStatus | None, limit: int) -> list[DirectiveRecord]:
        return await self._ledger.list(status, limit)

    async def get_directive(self, directive_id: str) -> DirectiveRecord | None:
        """One directive's row: the dispatcher's when this node holds both sides."""
        return await self._ledger.get(directive_id)

    async def directive_counts(self) -> dict[tuple[str, str, str], int]:
        return await self._ledger.counts()

    async def list_messages(self, session_id: str | None, limit: int) -> list[InboxMessage]:
        return await self._inbox.list(session_id, limit)

    async def get_state(self, namespace: str, key: str) -> StateRecord | None:
        entry = await self._state.get(namespace, key)
        return state_record(namespace, entry) if entry is not None else None

    async def put_state(self, namespace: str, key: str, value: Any) -> StateRecord:
        return state_record(namespace, await self._state.put(namespace, key, value))

    # --- the heartbeat ---------------------------------------------------------------------------
    def sample_metrics(self, max_age_s: float = 0.0) -> tuple[NodeMetrics, Snapshot]:
        """Host figures from psutil (reused for ``max_age_s``: a sample costs ~150 µs, too much
        for every query_resources) plus the kernel's figures, always current."""
        now = self.clock.monotonic()
        if self._host_sample is None or now - self._host_sample[0] > max_age_s:
            self._host_sample = (now, self._sampler.sample())
        host = self._host_sample[1]
        k = self._kernel
        k.set_process_sample(1, host.own_cpu_ms, host.own_rss_mb)  # PID 1 is the daemon itself
        uptime = (self.clock.now_ms() - self.started_at_ms) / 1000.0
        load = NodeLoad(**vars(host.load), active_sessions=k.active_sessions(),
                        active_processes=k.active_processes(), uptime_seconds=round(uptime, 1))
        metrics = NodeMetrics(**vars(load), today=k.usage_today().rounded())
        counters = k.counters()
        counters.cpu_ms = round(counters.cpu_ms, 1)
        return metrics, Snapshot(**vars(counters), **vars(load))

    async def heartbeat(self) -> SwarmNode:
        """One beat: sample for real, update our row, append a snapshot, then send the same
        heartbeat to every known non-sealed peer and learn from their digests."""
        metrics, snap = self.sample_metrics()
        row = await self._registry.record_heartbeat(self.node_id, metrics, snap, boot_id=self.boot_id)
        if not self.heartbeat_stopped:
            agents = [p for p in self._kernel.list() if p.role == "agent"]
            await self._membership.fan_out(heartbeat_payload(
                self.self_registration(), self.lifecycle, metrics, snap, agents, self.clock.now_ms()))
        return self._registry.to_wire(row)

    async def wait_for_beat_request(self, timeout_s: float) -> None:
        """Sleep on the node's clock until the next beat is due, or until peers should hear from
        us at once (new peers learned, a drain): a request made while the last beat ran counts too."""
        wake = self._membership.beat_now
        if not wake.is_set():
            # the sleep runs in a task named after the caller, so a test clock sees the loop asleep
            caller = asyncio.current_task()
            due = asyncio.create_task(self.clock.sleep(timeout_s), name=caller.get_name() if caller else None)
            requested = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({due, requested}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                due.cancel()
                requested.cancel()
        wake.clear()

    def membership_busy(self) -> bool:
        """Membership has work under way (a beat requested, heartbeat calls or checks of digest
        members in flight): what a test driving a fleet on a manual clock waits out."""
        return self._membership.busy()

    def note_loop_lag(self, lag_s: float) -> None:
        """Record how late the event loop ran. A long stall (a blocking handler, SIGSTOP, a
        suspended VM) gives every peer a fresh grace period instead of a false verdict."""
        self.loop_lag_s = max(0.0, lag_s)
        if lag_s * 1000 > min(1000, self.settings.heartbeat_interval_ms):
            self.max_loop_lag_s = max(self.max_loop_lag_s, lag_s)
            log.warning("the event loop was blocked for %.1f s; peers get a fresh grace period", lag_s)
            self._registry.grant_grace()

    async def sweep(self) -> list[str]:
        """Peers silent for longer than stale_after become disconnected; what they ran, unknown.
        About once an hour, usage buckets no report reaches any more are pruned."""
        changed = await self._registry.sweep()
        for node_id in changed:
            self._membership.node_silent(node_id)
        for node_id in await self._registry.forget_silent():
            self._forgotten(node_id)
        now = self.clock.now_ms()
        if now - self._usage_pruned_at_ms >= USAGE_PRUNE_INTERVAL_MS:
            self._usage_pruned_at_ms = now
            await self._store.write(lambda conn: SnapshotRepo.prune_buckets(conn, now))
        return changed

    async def forget_node(self, node_id: str) -> bool:
        """An operator drops a peer and what is kept about it (it comes back if it beats again).
        Raises PermissionError for this node itself; False for an unknown id."""
        if node_id == self.node_id:
            raise PermissionError("a node cannot forget itself; seal it instead")
        if not await self._registry.forget(node_id, "forgotten by an operator"):
            return False
        self._forgotten(node_id)
        return True

    def _forgotten(self, node_id: str) -> None:
        self._membership.node_forgotten(node_id)
        self._remote.forget_node(node_id)

    async def discover_peers(self, endpoints: list[str] | tuple[str, ...] = ()) -> list[str]:
        return await self._membership.discover_peers(endpoints)

    # --- dispatch -------------------------------------------------------------------------------
    async def dispatch(self, request: DispatchRequest) -> DirectiveRecord:
        """Send one directive to the node the request names (by id or URL)."""
        return await self._dispatcher.dispatch(request)

    async def broadcast(self, request: DispatchRequest) -> list[DirectiveRecord]:
        """One directive per live node of the request's group."""
        return await self._dispatcher.broadcast(request)

    async def cancel_directive(self, directive_id: str) -> DirectiveRecord | None:
        return await self._dispatcher.cancel(directive_id)

    # --- control --------------------------------------------------------------------------------
    async def control_node(self, node_id: str, action: str, reason: str,
                           deadline_s: float | None = None) -> SwarmNode | dict[str, Any]:
        """drain / undrain / seal of any node: ours directly, a peer's over A2A (it checks the
        swarm token like every call). Raises LookupError for an unknown node, PermissionError
        when the action is not possible now, RuntimeError when the peer cannot be reached."""
        if node_id == self.node_id:
            return await self._control_self(action, reason, deadline_s)
        row = self._registry.find(node_id)
        if row is None:
            raise LookupError(f"no node with id {node_id!r}; list them with GET /api/swarm/nodes")
        return await self._membership.control_peer(row, action, reason, deadline_s)

    async def _control_self(self, action: str, reason: str, deadline_s: float | None = None) -> SwarmNode:
        if action == "drain":
            return await self.drain(reason, deadline_s)
        if action == "undrain":
            return await self.undrain(reason)
        return await self.seal(reason)

    async def drain(self, reason: str = "operator", deadline_s: float | None = None) -> SwarmNode:
        """No new work; in-flight work finishes. With a deadline, what still runs then is cancelled."""
        if self.lifecycle is Lifecycle.SEALED:
            raise PermissionError("the node is sealed; it is shutting down")
        row = await self._registry.set_lifecycle(self.node_id, Lifecycle.DRAINING, reason)
        self._membership.beat_now.set()  # peers learn it now, not at the next interval
        if deadline_s is not None:
            if self._drain_deadline is not None:
                self._drain_deadline.cancel()
            self._drain_deadline = asyncio.create_task(self._cancel_at_drain_deadline(deadline_s))
        return self._registry.to_wire(row)

    async def _cancel_at_drain_deadline(self, deadline_s: float) -> None:
        await self.clock.sleep(deadline_s)
        if self.lifecycle is Lifecycle.DRAINING:
            cancelled = await self._work.cancel_all(f"cancelled at the drain deadline ({deadline_s:g} s)")
            log.info("drain deadline reached: %d directive(s) cancelled", cancelled)

    async def undrain(self, reason: str = "operator") -> SwarmNode:
        if self.lifecycle is Lifecycle.SEALED:
            raise PermissionError("the node is sealed; it is shutting down")
        row = await self._registry.set_lifecycle(self.node_id, Lifecycle.ACTIVE, reason)
        self._membership.beat_now.set()
        return self._registry.to_wire(row)

    async def seal(self, reason: str = "operator") -> SwarmNode:
        """Stop taking work, stop the heartbeat, persist ``sealed`` and ask the daemon to exit 0.
        In-flight work is finished by the app's shutdown before the process ends."""
        self.heartbeat_stopped = True
        row = await self._registry.set_lifecycle(self.node_id, Lifecycle.SEALED, reason)
        await self._membership.leave(reason)
        self.shutdown_requested.set()
        return self._registry.to_wire(row)
