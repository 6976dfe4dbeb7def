"""``swarm_resource_snapshots`` (the per-node time series, at most SNAPSHOT_RETENTION rows per node)
and ``swarm_usage_hourly`` (running increase of the cumulative counters per node and UTC hour).

Counters in snapshots are cumulative. Usage over a window is computed like Prometheus
``increase()``: the sum of positive deltas, where a drop (or a new boot id) is a counter reset
and the new value counts in full. The first sample of a node is its baseline.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import orjson

from cortex_node.contracts import (
    SNAPSHOT_FIELDS,
    SNAPSHOT_RETENTION,
    USAGE_COUNTERS,
    Snapshot,
    Usage,
    camel,
    format_ts,
)
from cortex_node.store.db import Store

HOUR_MS = 3_600_000
USAGE_BUCKETS_KEPT_MS = 48 * HOUR_MS  # twice the report window; older hourly buckets are pruned
_SERIES_FIELDS = ", ".join(f"'{camel(f)}', {f}" for f in SNAPSHOT_FIELDS) + ", 'snapshotAt', snapshot_at"


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
# the hour's bucket: counter increases add up, the host memory in use feeds the hour's peak
_BUCKET = (
    f"INSERT INTO swarm_usage_hourly (node_id, hour_start, {', '.join(USAGE_COUNTERS)}, peak_memory_mb, snapshots)"
    f" VALUES (?, ?, {', '.join('?' * len(USAGE_COUNTERS))}, ?, 1) ON CONFLICT (node_id, hour_start) DO UPDATE SET "
    + "".join(f"{c} = {c} + excluded.{c}, " for c in USAGE_COUNTERS)
    + "peak_memory_mb = CASE WHEN excluded.peak_memory_mb > peak_memory_mb"
    " THEN excluded.peak_memory_mb ELSE peak_memory_mb END, snapshots = snapshots + 1"
)
_INTEGER = frozenset(f.name for f in dataclasses.fields(Usage) if f.type in (int, "int"))
_USAGE_SUMS = ", ".join(f"SUM({c})" for c in USAGE_COUNTERS)


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

    def forget(self, node_id: str) -> None:
        """The node's rows were deleted (NodeRepo.forget): its cached figures go too."""
        self._last.pop(node_id, None)
        self._counts.pop(node_id, None)

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
        deltas = [counter_increase(getattr(prev, c) if prev else None, getattr(snap, c), reset)
                  for c in USAGE_COUNTERS]
        values = [getattr(snap, f) for f in SNAPSHOT_FIELDS]
        conn.execute(_INSERT, (node_id, *values, format_ts(at_ms)))
        conn.execute(_BUCKET, (node_id, format_ts(hour_start_ms(at_ms)),
                               *(int(v) if c in _INTEGER else v for c, v in zip(USAGE_COUNTERS, deltas)),
                               snap.memory_used_mb))
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

    async def usage_since(self, since_ms: int) -> dict[str, tuple[Usage, int]]:
        """Per node: the counter increases and peak memory over the hourly buckets that overlap
        [since, now], and how many samples they hold. Reads at most 25 rows a node for 24 h."""
        async with self.store.db.execute(
            f"SELECT node_id, {_USAGE_SUMS}, MAX(peak_memory_mb), SUM(snapshots) FROM swarm_usage_hourly"
            " WHERE hour_start >= ? GROUP BY node_id",
            (format_ts(hour_start_ms(since_ms)),),
        ) as cur:
            rows = await cur.fetchall()
        out = {}
        for node_id, *sums, peak, samples in rows:
            usage = Usage(**{c: (int(v or 0) if c in _INTEGER else float(v or 0)) for c, v in zip(USAGE_COUNTERS, sums)},
                          peak_memory_mb=float(peak or 0))
            out[node_id] = (usage, int(samples or 0))
        return out

    @staticmethod
    def prune_buckets(conn: sqlite3.Connection, now_ms: int) -> int:
        """A Store.write job step: drop the hourly buckets no report window reaches any more."""
        cur = conn.execute("DELETE FROM swarm_usage_hourly WHERE hour_start < ?",
                           (format_ts(hour_start_ms(now_ms - USAGE_BUCKETS_KEPT_MS)),))
        return cur.rowcount

