"""The fleet registry: registration, heartbeat ingest, stale sweep, node events.

The registry is held in memory (reads never touch SQLite) and written through to the ``nodes``
table. Every time it records is this node's own clock at receipt: a peer's clock never decides
whether that peer is stale.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from typing import Callable
from urllib.parse import urlsplit

from cortex_node.clock import Clock
from cortex_node.contracts import (
    FORGET_AFTER_MS,
    MAX_NODES,
    Lifecycle,
    NodeMetrics,
    NodeStatus,
    Snapshot,
    SwarmNode,
    SwarmNodeRegistration,
    derive_status,
    format_ts,
)
from cortex_node.store.db import Store
from cortex_node.store.history import NodeHistoryRepo
from cortex_node.store.nodes import NodeRepo, NodeRow
from cortex_node.store.snapshots import SnapshotRepo

log = logging.getLogger("cortex.registry")

EventSink = Callable[[str, dict], None]


class UnknownNode(KeyError):
    pass


class ForeignClaim(ValueError):
    """A peer's registration that claims this node's own id or address."""


class RegistryFull(ValueError):
    """The registry holds max_nodes nodes: a new one is refused until one is forgotten."""


NEVER_HEARD_FACTOR = 10  # a peer never heard from is forgotten after 10 x stale_after

class NodeRegistry:
    def __init__(self, store: Store, clock: Clock, *, self_id: str, stale_after_ms: int,
                 on_event: EventSink | None = None, max_nodes: int = MAX_NODES,
                 forget_after_ms: int = FORGET_AFTER_MS) -> None:
        self.store = store
        self.clock = clock
        self.self_id = self_id
        self.stale_after_ms = stale_after_ms
        self.max_nodes = max_nodes
        self.forget_after_ms = forget_after_ms
        self.never_heard_after_ms = NEVER_HEARD_FACTOR * stale_after_ms
        self.nodes_repo = NodeRepo(store)
        self.history = NodeHistoryRepo(store)
        self.snapshots = SnapshotRepo(store)
        self.nodes: dict[str, NodeRow] = {}
        self.started_at_ms = clock.now_ms()
        self._on_event = on_event or (lambda kind, data: None)
        # moves whenever a node is added or changes status: a membership digest is rebuilt (and
        # sent) only when it moved
        self.membership_version = 0

    async def load(self) -> None:
        self.nodes = {row.id: row for row in await self.nodes_repo.load_all()}
        # Grace after our own restart: no peer is judged stale until it has had stale_after
        # to reach us again (its last receipt time is older than our downtime).
        self.grant_grace()

    def grant_grace(self) -> None:
        """Judge no peer stale before stale_after from now (after our restart or a stall)."""
        self.started_at_ms = self.clock.now_ms()

    # --- reads ----------------------------------------------------------------------------------
    def get(self, node_id: str) -> NodeRow:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise UnknownNode(node_id) from None

    def has(self, node_id: str) -> bool:
        return node_id in self.nodes

    def find(self, node_id: str) -> NodeRow | None:
        return self.nodes.get(node_id)

    def find_by_endpoint(self, endpoint: str) -> NodeRow | None:
        endpoint = endpoint.rstrip("/")
        for row in self.nodes.values():
            if row.endpoint == endpoint:
                return row
        return None

    def is_stale(self, row: NodeRow, now_ms: int) -> bool:
        if row.is_self:
            return False
        seen = max(row.last_heartbeat_ms or row.registered_at_ms, self.started_at_ms)
        return now_ms - seen > self.stale_after_ms

    def status_of(self, row: NodeRow, now_ms: int) -> NodeStatus:
        return derive_status(is_self=row.is_self, lifecycle=row.lifecycle, stale=self.is_stale(row, now_ms),
                             heard=row.last_heartbeat_ms is not None)

    def to_wire(self, row: NodeRow, now_ms: int | None = None) -> SwarmNode:
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        return SwarmNode(
            id=row.id, name=row.name, endpoint=row.endpoint, tier=row.tier, status=row.status,
            lifecycle=row.lifecycle, is_self=row.is_self, a2a_endpoint=row.a2a_endpoint, host=row.host,
            port=row.port, capabilities=list(row.capabilities), version=row.version, group_name=row.group_name,
            labels=dict(row.labels), metrics=replace(row.metrics), boot_id=row.boot_id,
            last_heartbeat=format_ts(row.last_heartbeat_ms),
            heartbeat_age_ms=(now_ms - row.last_heartbeat_ms) if row.last_heartbeat_ms is not None else None,
            registered_at=format_ts(row.registered_at_ms), updated_at=format_ts(row.updated_at_ms),
        )

    def list(self) -> list[NodeRow]:
        return sorted(self.nodes.values(), key=lambda r: (not r.is_self, r.name, r.id))

    # --- writes ---------------------------------------------------------------------------------
    async def register(self, reg: SwarmNodeRegistration, *, is_self: bool = False) -> NodeRow:
        """Idempotent: the same id, or the same endpoint, updates the existing row."""
        now = self.clock.now_ms()
        endpoint = reg.endpoint.rstrip("/")
        by_endpoint = self.find_by_endpoint(endpoint)
        node_id = reg.id or (by_endpoint.id if by_endpoint else None)
        if node_id is None:
            raise ValueError("a registration needs an id or a known endpoint")
        existing = self.nodes.get(node_id)
        if not is_self and (node_id == self.self_id or (by_endpoint is not None and by_endpoint.is_self)):
            # a peer may never replace, or speak for, this node's own row
            raise ForeignClaim(f"a registration for {node_id} at {endpoint} claims this node's own "
                               f"{'id' if node_id == self.self_id else 'address'}")
        superseded = by_endpoint if by_endpoint is not None and by_endpoint.id != node_id else None
        if existing is None and superseded is None and len(self.nodes) >= self.max_nodes:
            raise RegistryFull(f"this node knows {len(self.nodes)} nodes, its limit (maxNodes); "
                               "forget silent ones first")
        parts = urlsplit(endpoint)
        row = NodeRow(
            id=node_id, name=reg.name, endpoint=endpoint, tier=reg.tier,
            status=NodeStatus.OFFLINE,  # derived below
            lifecycle=existing.lifecycle if existing else Lifecycle.ACTIVE, is_self=is_self,
            registered_at_ms=existing.registered_at_ms if existing else now,
            created_at_ms=existing.created_at_ms if existing else now, updated_at_ms=now,
            a2a_endpoint=reg.a2a_endpoint or f"{endpoint}/a2a", host=parts.hostname, port=parts.port,
            capabilities=list(reg.capabilities), version=reg.version, group_name=reg.group_name,
            labels=dict(reg.labels), metrics=existing.metrics if existing else NodeMetrics(),
            boot_id=reg.boot_id or (existing.boot_id if existing else None), drained=existing.drained if existing else False,
            last_heartbeat_ms=existing.last_heartbeat_ms if existing else None,
        )
        row.status = self.status_of(row, now)
        restarted = bool(existing and reg.boot_id and existing.boot_id and existing.boot_id != reg.boot_id)
        def job(conn: sqlite3.Connection) -> None:
            if superseded is not None:
                NodeRepo.delete(conn, superseded.id)
                NodeHistoryRepo.add(conn, node_id, "superseded", f"replaced {superseded.id} at {endpoint}", now)
            NodeRepo.upsert(conn, row)
            if existing is None:
                NodeHistoryRepo.add(conn, node_id, "registered", f"{reg.name} at {endpoint}", now)
            elif restarted:
                NodeHistoryRepo.add(conn, node_id, "restarted", f"boot {reg.boot_id}", now)

        # memory first, then disk: nothing may slip in between reading a row and replacing it
        # (a heartbeat ingested during the write must not be overwritten by this older view)
        if superseded is not None:
            self.nodes.pop(superseded.id, None)
        self.nodes[node_id] = row
        self.membership_version += 1
        await self.store.write(job)
        if existing is None:
            self._on_event("node.registered", {"nodeId": node_id, "name": reg.name})
        return row

    async def record_heartbeat(self, node_id: str, metrics: NodeMetrics, snapshot: Snapshot, *,
                               boot_id: str | None = None, lifecycle: Lifecycle | None = None) -> NodeRow:
        """Ingest one heartbeat: receipt time is ours; the row, one snapshot and the hour's usage
        bucket are written in one transaction."""
        row = self.get(node_id)
        now = self.clock.now_ms()
        was = row.status
        restarted = bool(boot_id and row.boot_id and boot_id != row.boot_id)
        new = replace(row, metrics=metrics, last_heartbeat_ms=now, updated_at_ms=now,
                      boot_id=boot_id or row.boot_id, lifecycle=lifecycle or row.lifecycle)
        new.status = self.status_of(new, now)
        events = []
        if restarted:
            events.append(("restarted", f"boot {boot_id}"))
        if was is NodeStatus.DISCONNECTED and new.status is not NodeStatus.DISCONNECTED:
            events.append(("recovered", "heartbeat received"))
        if lifecycle is not None and lifecycle is not row.lifecycle:
            events.append((lifecycle.value if lifecycle is not Lifecycle.ACTIVE else "undrained", "reported by the node"))
        def job(conn: sqlite3.Connection) -> None:
            NodeRepo.record_beat(conn, new)
            self.snapshots.append(conn, node_id, snapshot, now, reset=restarted)
            for kind, detail in events:
                NodeHistoryRepo.add(conn, node_id, kind, detail, now)

        self.nodes[node_id] = new  # memory first (see register)
        if new.status is not was:
            self.membership_version += 1
        await self.store.write(job)
        self._on_event("node.heartbeat", {"nodeId": node_id, "status": new.status.value})
        if new.status is not was:
            self._on_event("node.status", {"nodeId": node_id, "from": was.value, "to": new.status.value})
        return new

    async def set_lifecycle(self, node_id: str, lifecycle: Lifecycle, detail: str = "") -> NodeRow:
        row = self.get(node_id)
        now = self.clock.now_ms()
        if row.lifecycle is lifecycle:
            return row
        drained = {Lifecycle.ACTIVE: False, Lifecycle.DRAINING: True, Lifecycle.SEALED: row.drained}[lifecycle]
        new = replace(row, lifecycle=lifecycle, drained=drained, updated_at_ms=now)
        new.status = self.status_of(new, now)
        kind = {Lifecycle.ACTIVE: "undrained", Lifecycle.DRAINING: "draining", Lifecycle.SEALED: "sealed"}[lifecycle]
        def job(conn: sqlite3.Connection) -> None:
            NodeRepo.upsert(conn, new)
            NodeHistoryRepo.add(conn, node_id, kind, detail, now)

        self.nodes[node_id] = new  # memory first (see register)
        self.membership_version += 1
        await self.store.write(job)
        self._on_event("node.status", {"nodeId": node_id, "from": row.status.value, "to": new.status.value})
        return new

    async def sweep(self) -> list[str]:
        """Mark peers whose last heartbeat receipt is older than stale_after as disconnected.
        Returns the ids that changed."""
        now = self.clock.now_ms()
        changed: list[NodeRow] = []
        for row in self.nodes.values():
            status = self.status_of(row, now)
            if status is not row.status and status is NodeStatus.DISCONNECTED:
                changed.append(replace(row, status=status, updated_at_ms=now))
        if not changed:
            return []
        def job(conn: sqlite3.Connection) -> None:
            for new in changed:
                NodeRepo.upsert(conn, new)
                age = (now - new.last_heartbeat_ms) / 1000 if new.last_heartbeat_ms else None
                detail = f"no heartbeat for {age:.1f} s" if age is not None else "never heard from"
                NodeHistoryRepo.add(conn, new.id, "disconnected", detail, now)

        was = {new.id: self.nodes[new.id].status for new in changed}
        for new in changed:  # memory first (see register)
            self.nodes[new.id] = new
            self.membership_version += 1
        await self.store.write(job)
        for new in changed:
            log.warning("node %s (%s) disconnected: no heartbeat within %d ms", new.name, new.id, self.stale_after_ms)
            self._on_event("node.status", {"nodeId": new.id, "from": was[new.id].value, "to": new.status.value})
        return [r.id for r in changed]

    async def forget(self, node_id: str, why: str) -> bool:
        """Drop a peer and everything kept about it (row, series, usage, history). False for an
        unknown id; this node's own row is never forgotten."""
        row = self.nodes.get(node_id)
        if row is None or row.is_self:
            return False
        del self.nodes[node_id]  # memory first (see register)
        self.membership_version += 1

        def job(conn: sqlite3.Connection) -> None:
            NodeRepo.forget(conn, node_id)
            self.snapshots.forget(node_id)  # its cache lives on the database thread, like its rows

        await self.store.write(job)
        log.info("node %s (%s) forgotten: %s", row.name, node_id, why)
        self._on_event("node.forgotten", {"nodeId": node_id, "reason": why})
        return True

    async def forget_silent(self) -> list[str]:
        """Forget peers silent for longer than forget_after (offline, disconnected or sealed), and
        peers never heard from for 10 x stale_after. Returns their ids."""
        now = self.clock.now_ms()
        gone: dict[str, str] = {}
        for row in list(self.nodes.values()):
            if row.is_self or row.status.is_live:
                continue
            seen = max(row.last_heartbeat_ms or row.registered_at_ms, self.started_at_ms)
            heard = row.last_heartbeat_ms is not None
            limit = self.forget_after_ms if heard else self.never_heard_after_ms
            if now - seen > limit:
                gone[row.id] = f"{'silent' if heard else 'never heard from'} for more than {limit // 1000} s"
        for node_id, why in gone.items():
            await self.forget(node_id, why)
        return list(gone)
