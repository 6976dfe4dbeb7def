"""Benchmark 4: the node's store queries on a full-size database.

    python -m bench.store_bench < spec.json     (spec: {"dir", "nodes", "snapshots", "reps"})

The database is a node's own schema (made by opening cortex_node.store.db.Store once), filled
fast with sqlite3 ``executemany``: ``nodes`` rows, ``snapshots`` samples per node one minute
apart ending now, inserted in time order (all nodes' minute m, then minute m+1: the physical
layout a fleet's heartbeats produce), and ``swarm_usage_hourly`` buckets computed from the very
same samples the way SnapshotRepo.append would have (sum of positive counter deltas per UTC hour,
peak memory, sample count).

Then, through the node's own classes over aiosqlite (warm cache; the first, cold-ish call is
reported separately): the 24 h fleet report, one node's series, the node list with its latest
metrics; and, through sqlite3 on the same file, the two baselines: a plain GROUP BY over the
24 h window of snapshots and "latest row per node".
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from cortex_node.contracts import REPORT_WINDOW_MS, SNAPSHOT_FIELDS, format_ts, to_wire
from cortex_node.contracts import USAGE_COUNTERS as COUNTERS
from cortex_node.store.snapshots import HOUR_MS, hour_start_ms

MINUTE_MS = 60_000

GROUP_BY_SQL = (
    "SELECT node_id, COUNT(*), MAX(tokens_in) - MIN(tokens_in), MAX(tokens_out) - MIN(tokens_out),"
    " MAX(cost_usd) - MIN(cost_usd), MAX(tool_calls) - MIN(tool_calls), MAX(cpu_ms) - MIN(cpu_ms),"
    " MAX(memory_used_mb) FROM swarm_resource_snapshots WHERE snapshot_at >= ? GROUP BY node_id"
)
LATEST_SQL = (
    "SELECT s.* FROM swarm_resource_snapshots s"
    " JOIN (SELECT node_id, MAX(id) AS id FROM swarm_resource_snapshots GROUP BY node_id) m ON s.id = m.id"
)


async def _schema(path: Path) -> None:
    from cortex_node.store.db import Store

    store = await Store(path).open()
    await store.close()


def build(path: Path, nodes: int, snapshots: int, now_ms: int, seed: int = 11) -> dict[str, Any]:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    asyncio.run(_schema(path))
    t0 = time.perf_counter()
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    ids = [f"node_bench{k:05d}_{rng.getrandbits(20):05x}" for k in range(nodes)]
    created = format_ts(now_ms - snapshots * MINUTE_MS - HOUR_MS)
    node_rows = []
    for k, node_id in enumerate(ids):
        metrics = {"cpuPercent": round(rng.uniform(1, 90), 1), "memoryUsedMb": 4096.0, "memoryTotalMb": 16384.0,
                   "diskUsedMb": 1e5, "diskTotalMb": 5e5, "activeSessions": 1, "activeProcesses": 3,
                   "today": {"tokensIn": 1000, "tokensOut": 400, "costUsd": 0.5}, "uptimeSeconds": 86400.0}
        node_rows.append((
            node_id, f"node-{k:05d}", f"http://10.{k // 250}.{k % 250}.10:4220", "root",
            "online" if k == 0 else "connected", json.dumps(["heartbeat", "report", "topology"]), "0.1.0", "default",
            format_ts(now_ms - rng.randint(0, 30_000)), created, created, format_ts(now_ms),
            f"http://10.{k // 250}.{k % 250}.10:4220/a2a", "{}", json.dumps(metrics), metrics["cpuPercent"], 4096.0,
            16384.0, 1, 3, f"10.{k // 250}.{k % 250}.10", 4220, "boot0", "active", int(k == 0), 0))
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO nodes VALUES ({', '.join('?' * 26)})", node_rows)
    db.execute("COMMIT")

    # Counters only grow here, so a bucket's increase is (last sample of the hour) - (last sample
    # before it), and the first sample of a node is its baseline: what SnapshotRepo.append sums.
    noise = [rng.random() for _ in range(4099)]
    counters = [[0.0] * len(COUNTERS) for _ in range(nodes)]
    hour_base: list[list[float] | None] = [None] * nodes  # counters at the end of the previous hour
    cur_hour = [-1] * nodes
    peak = [0.0] * nodes
    count = [0] * nodes
    bucket_rows: list[tuple[Any, ...]] = []

    def close_bucket(k: int) -> None:
        base = hour_base[k] if hour_base[k] is not None else first[k]  # first sample: the baseline
        c = counters[k]
        inc = [c[j] - base[j] for j in range(len(COUNTERS))]
        bucket_rows.append((ids[k], format_ts(cur_hour[k]), int(inc[0]), int(inc[1]), inc[2], int(inc[3]), inc[4],
                            peak[k], count[k]))
        hour_base[k] = list(c)

    first: list[list[float]] = [[0.0] * len(COUNTERS) for _ in range(nodes)]
    insert = (f"INSERT INTO swarm_resource_snapshots (node_id, {', '.join(SNAPSHOT_FIELDS)}, snapshot_at) "
              f"VALUES (?, {', '.join('?' * len(SNAPSHOT_FIELDS))}, ?)")
    # bulk load without the (node_id, id) index, then build it once: same index, built in seconds
    (index_sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'swarm_resource_snapshots_node'").fetchone()
    db.execute("DROP INDEX swarm_resource_snapshots_node")
    start_ms = now_ms - (snapshots - 1) * MINUTE_MS
    db.execute("BEGIN")
    for m in range(snapshots):
        at = start_ms + m * MINUTE_MS
        at_text = format_ts(at)
        hour = hour_start_ms(at)
        rows = []
        for k in range(nodes):
            if cur_hour[k] != hour:  # before this sample: the counters are the previous hour's last
                if cur_hour[k] >= 0:
                    close_bucket(k)
                cur_hour[k], peak[k], count[k] = hour, 0.0, 0
            c = counters[k]
            r = noise[(k * 31 + m * 17) % 4099]
            c[0] += int(2000 * r)  # tokens_in
            c[1] += int(800 * r)  # tokens_out
            c[2] += 0.02 * r  # cost_usd
            c[3] += int(3.99 * r)  # tool_calls
            c[4] += 600 * r  # cpu_ms
            mem = 2048.0 + (k % 64) * 32 + 512 * r
            # in SNAPSHOT_FIELDS order: the usage vector (peak memory last), then the load
            rows.append((ids[k], int(c[0]), int(c[1]), c[2], int(c[3]), c[4], mem, 100 * r, mem, 16384.0, 1e5, 5e5,
                         1, 3, 60.0 * m, at_text))
            if m == 0:
                first[k] = list(c)
            if mem > peak[k]:
                peak[k] = mem
            count[k] += 1
        db.executemany(insert, rows)
    for k in range(nodes):
        close_bucket(k)
    db.executemany(
        "INSERT INTO swarm_usage_hourly (node_id, hour_start, tokens_in, tokens_out, cost_usd, tool_calls, cpu_ms,"
        " peak_memory_mb, snapshots) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", bucket_rows)
    db.execute(index_sql)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    (rows_total,) = db.execute("SELECT COUNT(*) FROM swarm_resource_snapshots").fetchone()
    (buckets_total,) = db.execute("SELECT COUNT(*) FROM swarm_usage_hourly").fetchone()
    db.close()
    return {"nodes": nodes, "snapshot_rows": rows_total, "usage_buckets": buckets_total,
            "build_s": round(time.perf_counter() - t0, 2), "db_mb": round(path.stat().st_size / 2**20, 1),
            "ids": ids}


def _stats(times_s: list[float]) -> dict[str, float]:
    ms = [t * 1000 for t in times_s]
    return {"first_ms": ms[0], "median_ms": statistics.median(ms[1:] or ms), "min_ms": min(ms), "max_ms": max(ms),
            "reps": len(ms)}


async def _timed(fn, reps: int) -> tuple[dict[str, float], Any]:
    times, result = [], None
    for _ in range(reps + 1):  # the first call is the cold-ish one, reported apart
        t = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t)
    return _stats(times), result


async def measure(path: Path, ids: list[str], reps: int) -> dict[str, Any]:
    from cortex_node.clock import SystemClock
    from cortex_node.config import NodeSettings
    from cortex_node.store.db import Store
    from cortex_node.store.nodes import NodeRepo
    from cortex_node.store.snapshots import SnapshotRepo
    from cortex_node.swarm.coordinator import Coordinator

    store = await Store(path).open()
    try:
        settings = NodeSettings(name="node-00000", data_dir=path.parent, port=4220)
        coordinator = Coordinator(settings, store, SystemClock(), ids[0])
        await coordinator.register_self()  # loads the registry (and refreshes the node's own row)
        snapshots = SnapshotRepo(store)
        out: dict[str, Any] = {}
        now = SystemClock().now_ms()

        out["usage_since"], usage = await _timed(lambda: snapshots.usage_since(now - REPORT_WINDOW_MS), reps)

        async def report():
            return await coordinator.get_resource_report()

        out["report"], rep = await _timed(report, reps)

        async def report_json():
            return json.dumps(to_wire(await coordinator.get_resource_report()), separators=(",", ":"))

        out["report_json"], body = await _timed(report_json, reps)
        out["report_nodes"] = len(rep.per_node)
        out["report_bytes"] = len(body)

        rng = random.Random(5)
        picks = [rng.choice(ids) for _ in range(reps + 1)]
        it = iter(picks)

        async def series():
            return await snapshots.series(next(it), 1440)

        out["series"], ser = await _timed(series, reps)
        out["series_rows"] = len(ser)

        async def node_list():
            return coordinator.list_nodes()

        out["node_list"], nodes = await _timed(node_list, reps)
        out["node_list_nodes"] = len(nodes)

        async def node_list_json():
            return json.dumps(to_wire({"selfId": coordinator.node_id, "nodes": coordinator.list_nodes()}),
                              separators=(",", ":"))

        out["node_list_json"], body = await _timed(node_list_json, reps)
        out["node_list_bytes"] = len(body)

        repo = NodeRepo(store)
        out["load_all"], rows = await _timed(repo.load_all, reps)
        out["load_all_rows"] = len(rows)
        return out
    finally:
        await store.close()


def baselines(path: Path, reps: int, now_ms: int) -> dict[str, Any]:
    db = sqlite3.connect(path)
    since = format_ts(now_ms - REPORT_WINDOW_MS)
    out = {}
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        rows = db.execute(GROUP_BY_SQL, (since,)).fetchall()
        times.append(time.perf_counter() - t)
    out["group_by_24h"] = {**_stats(times), "rows": len(rows), "sql": GROUP_BY_SQL}
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        rows = db.execute(LATEST_SQL).fetchall()
        times.append(time.perf_counter() - t)
    out["latest_per_node"] = {**_stats(times), "rows": len(rows), "sql": LATEST_SQL}
    db.close()
    return out


def run(spec: dict[str, Any]) -> dict[str, Any]:
    base = Path(spec["dir"])
    base.mkdir(parents=True, exist_ok=True)
    path = base / "store-bench.db"
    now_ms = int(time.time() * 1000)
    built = build(path, int(spec.get("nodes", 1000)), int(spec.get("snapshots", 1440)), now_ms)
    ids = built.pop("ids")
    reps = int(spec.get("reps", 5))
    queries = asyncio.run(measure(path, ids, reps))
    base_reps = int(spec.get("baseline_reps", max(1, min(reps, 2))))
    base_line = baselines(path, base_reps, now_ms)
    if not spec.get("keep"):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return {"data": built, "queries": queries, "baselines": base_line}


def main() -> int:
    sys.stdout.write(json.dumps(run(json.loads(sys.stdin.read()))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
