"""The facade the rest of the program uses (DESIGN §4). One instance per node process."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any, Callable

from cortex_node.clock import Clock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    REPORT_WINDOW_MS,
    SWARM_VERSION,
    DirectiveStatus,
    Lifecycle,
    NodeMetrics,
    NodeStatus,
    NodeUsage,
    SwarmNode,
    SwarmNodeRegistration,
    SwarmResourceReport,
    SwarmTopology,
    TopologyNode,
    format_ts,
    new_node_id,
)
from cortex_node.kernel.process_table import OsKernel
from cortex_node.kernel.sampler import HostSampler
from cortex_node.store.db import Store
from cortex_node.store.directives import DirectiveRepo
from cortex_node.store.snapshots import Snapshot
from cortex_node.swarm.node_registry import NodeRegistry

log = logging.getLogger("cortex.coordinator")

ONLINE_STATUSES = (NodeStatus.ONLINE, NodeStatus.CONNECTED, NodeStatus.DRAINING, NodeStatus.DEGRADED)


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
    def __init__(self, settings: NodeSettings, store: Store, clock: Clock, node_id: str,
                 on_event: Callable[[str, dict], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.node_id = node_id
        self.boot_id = secrets.token_hex(6)
        self.started_at_ms = clock.now_ms()
        self.registry = NodeRegistry(store, clock, self_id=node_id, stale_after_ms=settings.stale_after_ms,
                                     on_event=on_event)
        self.directives = DirectiveRepo(store)
        self.kernel = OsKernel(node_id=node_id, clock=clock)
        self.sampler = HostSampler(settings.data_dir)
        self.shutdown_requested = asyncio.Event()
        self.heartbeat_stopped = False

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
        procs = self.kernel.list()
        nodes = []
        for row in self.registry.list():
            mine = row.is_self
            counters = self.kernel.counters() if mine else None
            nodes.append(TopologyNode(
                id=row.id, name=row.name, is_self=mine, status=row.status,
                process_count=self.kernel.active_processes() if mine else row.metrics.active_processes,
                remote_process_count=0,
                tokens_in=counters.tokens_in if counters else row.metrics.tokens_used_today,
                tokens_out=counters.tokens_out if counters else row.metrics.tokens_out_today,
                cost_usd=round(counters.cost_usd if counters else row.metrics.cost_usd_today, 6),
            ))
        return SwarmTopology(self_id=self.node_id, nodes=nodes, processes=procs)

    async def list_directives(self, status: DirectiveStatus | None, limit: int) -> list[dict[str, Any]]:
        return await self.directives.list(status, limit)

    # --- the heartbeat ---------------------------------------------------------------------------
    def sample_metrics(self) -> tuple[NodeMetrics, Snapshot]:
        host = self.sampler.sample()
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
        """One local beat: sample for real, update our row, append a snapshot."""
        metrics, snap = self.sample_metrics()
        row = await self.registry.record_heartbeat(self.node_id, metrics, snap, boot_id=self.boot_id)
        return self.registry.to_wire(row)

    async def sweep(self) -> list[str]:
        return await self.registry.sweep()

    # --- control --------------------------------------------------------------------------------
    async def drain(self, reason: str = "operator") -> SwarmNode:
        row = await self.registry.set_lifecycle(self.node_id, Lifecycle.DRAINING, reason)
        return self.registry.to_wire(row)

    async def undrain(self, reason: str = "operator") -> SwarmNode:
        if self.lifecycle is Lifecycle.SEALED:
            raise RuntimeError("the node is sealed; it is shutting down")
        row = await self.registry.set_lifecycle(self.node_id, Lifecycle.ACTIVE, reason)
        return self.registry.to_wire(row)

    async def seal(self, reason: str = "operator") -> SwarmNode:
        """Stop taking work, stop the heartbeat, persist ``sealed`` and ask the daemon to exit 0.
        In-flight work is finished by the app's shutdown before the process ends."""
        self.heartbeat_stopped = True
        row = await self.registry.set_lifecycle(self.node_id, Lifecycle.SEALED, reason)
        self.shutdown_requested.set()
        return self.registry.to_wire(row)
