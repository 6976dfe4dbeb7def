"""``swarm_resource_snapshots`` (the per-node time series, at most SNAPSHOT_RETENTION rows per node)
and ``swarm_usage_hourly`` (running increase of the cumulative counters per node and UTC hour).

Counters in snapshots are cumulative. Usage over a window is computed like Prometheus
``increase()``: the sum of positive deltas, where a drop (or a new boot id) is a counter reset
and the new value counts in full. The first sample of a node is its baseline.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from cortex_node.contracts import SNAPSHOT_RETENTION, camel, format_ts
from cortex_node.store.db import Store

COUNTERS = ("tokens_in", "tokens_out", "cost_usd", "tool_calls", "cpu_ms")
SNAPSHOT_FIELDS = (
    "tokens_in", "tokens_out", "cost_usd", "tool_calls", "cpu_ms", "cpu_percent", "memory_used_mb",
    "memory_total_mb", "disk_used_mb", "disk_total_mb", "active_sessions", "active_processes",
    "uptime_seconds",
)
HOUR_MS = 3_600_000
_SERIES_FIELDS = ", ".join(f"'{camel(f)}', {f}" for f in SNAPSHOT_FIELDS) + ", 'snapshotAt', snapshot_at"


@dataclass
class Snapshot:
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0
    cpu_ms: float = 0.0
    cpu_percent: float = 0.0
    memory_used_mb: float = 0.0
    memory_total_mb: float = 0.0
    disk_used_mb: float = 0.0
    disk_total_mb: float = 0.0
    active_sessions: int = 0
    active_processes: int = 0
    uptime_seconds: float = 0.0


def counter_increase(prev: float | None, cur: float, reset: bool = False) -> float:
    """Prometheus-style increase between two samples of a cumulative counter."""
    if prev is None:
        return 0.0
    if reset or cur < prev:
        return cur
    return cur - prev


def hour_start_ms(ms: int) -> int:
    return ms - ms % HOUR_MS


_INSERT = (
    f"INSERT INTO swarm_resource_snapshots (node_id, {', '.join(SNAPSHOT_FIELDS)}, snapshot_at) "
    f"VALUES (?, {', '.join('?' * len(SNAPSHOT_FIELDS))}, ?)"
)
_BUCKET = (
    "INSERT INTO swarm_usage_hourly (node_id, hour_start, tokens_in, tokens_out, cost_usd, tool_calls,"
    " cpu_ms, peak_memory_mb, snapshots) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (node_id, hour_start) DO UPDATE SET tokens_in = tokens_in + excluded.tokens_in,"
    " tokens_out = tokens_out + excluded.tokens_out, cost_usd = cost_usd + excluded.cost_usd,"
    " tool_calls = tool_calls + excluded.tool_calls, cpu_ms = cpu_ms + excluded.cpu_ms,"
    " peak_memory_mb = CASE WHEN excluded.peak_memory_mb > peak_memory_mb"
    " THEN excluded.peak_memory_mb ELSE peak_memory_mb END, snapshots = snapshots + 1"
)
# Keeps the newest SNAPSHOT_RETENTION rows of one node: an index range delete, no table scan.
_RETAIN = (
    "DELETE FROM swarm_resource_snapshots WHERE node_id = ? AND id <= ("
    " SELECT id FROM swarm_resource_snapshots WHERE node_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


class SnapshotRepo:
    def __init__(self, store: Store, retention: int = SNAPSHOT_RETENTION) -> None:
        self.store = store
        self.retention = retention
        # Newest counters and row count per node, so an append needs no read. Touched only on
        # the database thread (inside write jobs); dropped when a commit fails.
        self._last: dict[str, Snapshot] = {}
        self._counts: dict[str, int] = {}
        store.rollback_hooks.append(self._forget)

    def _forget(self) -> None:
        self._last.clear()
        self._counts.clear()

    def _last_of(self, conn: sqlite3.Connection, node_id: str) -> Snapshot | None:
        if node_id in self._last:
            return self._last[node_id]
        row = conn.execute(
            f"SELECT {', '.join(SNAPSHOT_FIELDS)} FROM swarm_resource_snapshots WHERE node_id = ? ORDER BY id DESC LIMIT 1",
            (node_id,),
        ).fetchone()
        (self._counts[node_id],) = conn.execute(
            "SELECT COUNT(*) FROM swarm_resource_snapshots WHERE node_id = ?", (node_id,)).fetchone()
        return Snapshot(*row) if row else None

    def append(self, conn: sqlite3.Connection, node_id: str, snap: Snapshot, at_ms: int, reset: bool = False) -> None:
        """A Store.write job step: append one sample, add its counter increase to the hour's
        bucket, apply retention."""
        prev = self._last_of(conn, node_id)
        deltas = [
            counter_increase(getattr(prev, c) if prev else None, getattr(snap, c), reset) for c in COUNTERS
        ]
        values = [getattr(snap, f) for f in SNAPSHOT_FIELDS]
        conn.execute(_INSERT, (node_id, *values, format_ts(at_ms)))
        conn.execute(
            _BUCKET,
            (node_id, format_ts(hour_start_ms(at_ms)), int(deltas[0]), int(deltas[1]), deltas[2],
             int(deltas[3]), deltas[4], snap.memory_used_mb),
        )
        self._last[node_id] = snap
        count = self._counts.get(node_id, 0) + 1
        if count > self.retention:
            conn.execute(_RETAIN, (node_id, node_id, self.retention))
            count = self.retention
        self._counts[node_id] = count

    async def series(self, node_id: str, limit: int, since_ms: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` samples (after ``since`` when given), oldest first. SQLite builds
        the JSON itself: 1,440 Python dicts per read were most of its cost."""
        sql = "SELECT id FROM swarm_resource_snapshots WHERE node_id = ?"
        params: list[Any] = [node_id]
        if since_ms is not None:
            sql += " AND snapshot_at >= ?"
            params.append(format_ts(since_ms))
        sql = (f"SELECT json_group_array(json_object({_SERIES_FIELDS})) FROM ("
               f"SELECT * FROM swarm_resource_snapshots WHERE id IN ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id)")
        params.append(limit)
        async with self.store.db.execute(sql, params) as cur:
            (text,) = await cur.fetchone()
        return orjson.loads(text)

    async def count(self, node_id: str) -> int:
        async with self.store.db.execute(
            "SELECT COUNT(*) FROM swarm_resource_snapshots WHERE node_id = ?", (node_id,)
        ) as cur:
            (n,) = await cur.fetchone()
        return n

    async def usage_since(self, since_ms: int) -> dict[str, dict[str, float]]:
        """Per node: counter increases and peak memory over the hourly buckets that overlap
        [since, now]. Reads at most 25 rows a node for a 24 h window."""
        async with self.store.db.execute(
            "SELECT node_id, SUM(tokens_in), SUM(tokens_out), SUM(cost_usd), SUM(tool_calls), SUM(cpu_ms),"
            " MAX(peak_memory_mb), SUM(snapshots) FROM swarm_usage_hourly WHERE hour_start >= ? GROUP BY node_id",
            (format_ts(hour_start_ms(since_ms)),),
        ) as cur:
            rows = await cur.fetchall()
        return {
            r[0]: {
                "tokens_in": int(r[1] or 0), "tokens_out": int(r[2] or 0), "cost_usd": float(r[3] or 0),
                "tool_calls": int(r[4] or 0), "cpu_ms": float(r[5] or 0), "peak_memory_mb": float(r[6] or 0),
                "snapshots": int(r[7] or 0),
            }
            for r in rows
        }

    @staticmethod
    def prune_buckets(conn: sqlite3.Connection, before_ms: int) -> None:
        conn.execute("DELETE FROM swarm_usage_hourly WHERE hour_start < ?", (format_ts(hour_start_ms(before_ms)),))

