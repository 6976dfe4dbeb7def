"""SQLite's own single-row commit rate on this machine, the baseline of the heartbeat benchmark.

    python -m bench.sqlite_baseline < spec.json      (spec: {"dir": PATH, "seconds": 2})

Both baselines write one ``swarm_resource_snapshots`` row per transaction into a fresh database
with the node's schema and pragmas (created by opening cortex_node.store.db.Store once):

``sqlite3``    the stdlib module, BEGIN IMMEDIATE / INSERT / COMMIT, on the calling thread;
``aiosqlite``  the same three statements through aiosqlite, as Store.transaction issues them
               (each statement is one hop to aiosqlite's worker thread and back).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiosqlite

from cortex_node.store.db import Store
from cortex_node.contracts import SNAPSHOT_FIELDS
from cortex_node.store.snapshots import _INSERT


def _row(i: int) -> tuple[Any, ...]:
    return (f"node_{i % 1000}", *([float(i)] * len(SNAPSHOT_FIELDS)), "2026-01-01T00:00:00.000Z")


async def _schema(path: Path) -> None:
    store = await Store(path).open()
    await store.close()


def sqlite3_rate(path: Path, seconds: float) -> dict[str, Any]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            db.execute("BEGIN IMMEDIATE")
            db.execute(_INSERT, _row(n))
            db.execute("COMMIT")
            n += 1
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    db.close()
    return {"commits": n, "seconds": round(elapsed, 3), "commits_per_s": n / elapsed}


async def aiosqlite_rate(path: Path, seconds: float) -> dict[str, Any]:
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            await db.execute("BEGIN IMMEDIATE")
            await db.execute(_INSERT, _row(n))
            await db.execute("COMMIT")
            n += 1
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    await db.close()
    return {"commits": n, "seconds": round(elapsed, 3), "commits_per_s": n / elapsed}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    base = Path(spec["dir"])
    base.mkdir(parents=True, exist_ok=True)
    seconds = float(spec.get("seconds", 2.0))
    a, b = base / "baseline-sqlite3.db", base / "baseline-aiosqlite.db"
    for p in (a, b):
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
        asyncio.run(_schema(p))
    cpu0 = time.process_time()
    s3 = sqlite3_rate(a, seconds)
    cpu1 = time.process_time()
    aio = asyncio.run(aiosqlite_rate(b, seconds))
    cpu2 = time.process_time()
    s3["cpu_us_per_commit"] = 1e6 * (cpu1 - cpu0) / s3["commits"]
    aio["cpu_us_per_commit"] = 1e6 * (cpu2 - cpu1) / aio["commits"]
    return {"sqlite3": s3, "aiosqlite": aio, "sqlite_version": sqlite3.sqlite_version}


def main() -> int:
    sys.stdout.write(json.dumps(run(json.loads(sys.stdin.read()))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
