"""Group commit: concurrent writes share transactions, a failing job fails alone, a failed
commit fails everyone in it and leaves nothing behind."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cortex_node.store.db import Store, StoreError


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store(tmp_path / "swarm.db").open()
    await s.db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    yield s
    await s.close()


async def count(store: Store) -> int:
    async with store.db.execute("SELECT COUNT(*) FROM t") as cur:
        return (await cur.fetchone())[0]


async def test_concurrent_writes_are_batched_and_all_committed(store: Store) -> None:
    batches: list[int] = []
    original = store.db._execute

    async def spy(fn, *args):
        if fn.__name__ == "_run_batch":
            batches.append(len(args[1]))
        return await original(fn, *args)

    store.db._execute = spy  # observe how many jobs each commit carried
    results = await asyncio.gather(*(store.write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?, ?)", (i, "x")).rowcount)
                                     for i in range(500)))
    assert results == [1] * 500 and await count(store) == 500
    assert sum(batches) == 500 and len(batches) < 50  # far fewer commits than writes


async def test_a_failing_job_fails_alone(store: Store) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (100, 'half')")
        raise ValueError("boom")

    outcomes = await asyncio.gather(
        store.write(lambda c: c.execute("INSERT INTO t VALUES (1, 'a')")),
        store.write(bad),
        store.write(lambda c: c.execute("INSERT INTO t VALUES (2, 'b')")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ValueError)
    async with store.db.execute("SELECT k FROM t ORDER BY k") as cur:
        assert [r[0] for r in await cur.fetchall()] == [1, 2]  # the half-done job left nothing


async def test_a_failed_commit_fails_every_job_and_stores_nothing(store: Store) -> None:
    await store.db.execute("CREATE TABLE guard (x INTEGER)")
    # a deferred foreign-key violation is only detected at COMMIT
    await store.db.execute("CREATE TABLE child (p INTEGER REFERENCES t(k) DEFERRABLE INITIALLY DEFERRED)")
    dropped = []
    store.rollback_hooks.append(lambda: dropped.append(True))
    outcomes = await asyncio.gather(
        store.write(lambda c: c.execute("INSERT INTO t VALUES (7, 'ok')")),
        store.write(lambda c: c.execute("INSERT INTO child VALUES (999)")),
        return_exceptions=True,
    )
    assert all(isinstance(o, StoreError) for o in outcomes) and dropped
    assert await count(store) == 0
    assert await store.write(lambda c: c.execute("INSERT INTO t VALUES (8, 'after')").rowcount) == 1
