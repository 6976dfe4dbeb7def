"""The ``nodes`` table: the fleet registry as this node knows it."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from cortex_node import jsonfast
from cortex_node.contracts import (
    Lifecycle,
    NodeMetrics,
    NodeStatus,
    NodeTier,
    WireError,
    format_ts,
    from_wire,
    parse_ts,
    to_wire,
)
from cortex_node.store.db import Store


@dataclass
class NodeRow:
    """One registry entry. Times are epoch ms in memory and ISO 8601 on disk."""

    id: str
    name: str
    endpoint: str
    tier: NodeTier
    status: NodeStatus
    lifecycle: Lifecycle
    is_self: bool
    registered_at_ms: int
    created_at_ms: int
    updated_at_ms: int
    a2a_endpoint: str | None = None
    host: str | None = None
    port: int | None = None
    capabilities: list[str] = field(default_factory=list)
    version: str = ""
    group_name: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    boot_id: str | None = None
    last_heartbeat_ms: int | None = None
    drained: bool = False  # an operator's drain, remembered through a seal and restart

    @property
    def rpc_url(self) -> str:
        """Where the node's JSON-RPC (A2A) endpoint is: the one place this is decided."""
        return self.a2a_endpoint or f"{self.endpoint}/a2a"


_COLUMNS = (
    "id, name, endpoint, tier, status, capabilities, version, group_name, last_heartbeat, "
    "registered_at, created_at, updated_at, a2a_endpoint, labels, metrics_json, cpu_percent, "
    "memory_used_mb, memory_total_mb, active_sessions, active_processes, host, port, boot_id, "
    "lifecycle, is_self, drained"
)
_UPSERT = (
    f"INSERT INTO nodes ({_COLUMNS}) VALUES ({', '.join('?' * 26)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _COLUMNS.split(",")[1:] if c.strip() not in ("created_at", "registered_at"))
)


def _params(row: NodeRow) -> tuple[Any, ...]:
    m = row.metrics
    return (
        row.id, row.name, row.endpoint, row.tier.value, row.status.value,
        json.dumps(row.capabilities), row.version, row.group_name, format_ts(row.last_heartbeat_ms),
        format_ts(row.registered_at_ms), format_ts(row.created_at_ms), format_ts(row.updated_at_ms),
        row.a2a_endpoint, json.dumps(row.labels), json.dumps(to_wire(m)), m.cpu_percent,
        m.memory_used_mb, m.memory_total_mb, m.active_sessions, m.active_processes, row.host,
        row.port, row.boot_id, row.lifecycle.value, int(row.is_self), int(row.drained),
    )


def _from_db(r: Any) -> NodeRow:
    try:  # the figures of the last heartbeat; a row an older version wrote starts from zero
        metrics = from_wire(NodeMetrics, json.loads(r[14] or "{}"), "metrics")
    except (WireError, ValueError):
        metrics = NodeMetrics()
    return NodeRow(
        id=r[0], name=r[1], endpoint=r[2], tier=NodeTier(r[3]), status=NodeStatus(r[4]),
        capabilities=json.loads(r[5] or "[]"), version=r[6], group_name=r[7],
        last_heartbeat_ms=parse_ts(r[8]) if r[8] else None, registered_at_ms=parse_ts(r[9]),
        created_at_ms=parse_ts(r[10]), updated_at_ms=parse_ts(r[11]), a2a_endpoint=r[12],
        labels=json.loads(r[13] or "{}"), metrics=metrics, host=r[20], port=r[21], boot_id=r[22],
        lifecycle=Lifecycle(r[23]), is_self=bool(r[24]), drained=bool(r[25]),
    )


class NodeRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def load_all(self) -> list[NodeRow]:
        async with self.store.db.execute(f"SELECT {_COLUMNS} FROM nodes ORDER BY registered_at, id") as cur:
            return [_from_db(r) for r in await cur.fetchall()]

    # writes: plain sqlite3 calls for a Store.write job
    @staticmethod
    def upsert(conn: sqlite3.Connection, row: NodeRow) -> None:
        conn.execute(_UPSERT, _params(row))

    @staticmethod
    def record_beat(conn: sqlite3.Connection, row: NodeRow) -> None:
        """The columns a heartbeat changes, for a row that exists (cheaper than the upsert on the
        heartbeat path)."""
        m = row.metrics
        conn.execute(
            "UPDATE nodes SET status = ?, last_heartbeat = ?, updated_at = ?, metrics_json = ?, cpu_percent = ?,"
            " memory_used_mb = ?, memory_total_mb = ?, active_sessions = ?, active_processes = ?, boot_id = ?,"
            " lifecycle = ?, drained = ? WHERE id = ?",
            (row.status.value, format_ts(row.last_heartbeat_ms), format_ts(row.updated_at_ms),
             jsonfast.dumps(to_wire(m)).decode(), m.cpu_percent, m.memory_used_mb, m.memory_total_mb,
             m.active_sessions, m.active_processes, row.boot_id, row.lifecycle.value, int(row.drained), row.id),
        )

    @staticmethod
    def delete(conn: sqlite3.Connection, node_id: str) -> None:
        conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    @staticmethod
    def forget(conn: sqlite3.Connection, node_id: str) -> None:
        """The node and everything kept about it: series, usage buckets, history."""
        for table, column in (("nodes", "id"), ("swarm_resource_snapshots", "node_id"),
                              ("swarm_usage_hourly", "node_id"), ("swarm_node_events", "node_id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (node_id,))

    async def count(self) -> int:
        async with self.store.db.execute("SELECT COUNT(*) FROM nodes") as cur:
            (n,) = await cur.fetchone()
        return n
