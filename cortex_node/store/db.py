"""One aiosqlite connection per node: WAL, numbered migrations, one writer.

Repositories (nodes.py, snapshots.py, directives.py, events.py) hold the SQL; they use portable
SQL (UPSERT, no SQLite-only functions in queries) so that another backend can be added later.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

import aiosqlite

from cortex_node.store.migrations import MIGRATIONS


T = TypeVar("T")


class StoreError(Exception):
    """The database cannot be used (unwritable directory, disk full, corrupt file)."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        # caches kept beside the tables (e.g. the newest snapshot per node) drop themselves here
        # when a commit fails, so they never describe rows that were not stored
        self.rollback_hooks: list[Callable[[], None]] = []

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def open(self) -> "Store":
        connection = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = aiosqlite.connect(self.path, isolation_level=None)
            self._db = await connection
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except (sqlite3.Error, OSError) as exc:
            connected = self._db is not None
            await self.close()
            if connection is not None and not connected:
                # a failed connect leaves aiosqlite's thread finishing its stop request: let it end
                # while the loop still runs, or it reports "Event loop is closed" with a traceback
                await asyncio.get_running_loop().run_in_executor(None, connection._thread.join, 5)
            raise StoreError(f"cannot use the database {self.path}: {exc}") from None
        return self

    async def _migrate(self) -> None:
        db = self.db
        async with db.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer cortex-node (schema {version}, this one knows {len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` (plain sqlite3 calls, on the database thread) in the next group commit and
        return its result once that commit is durable in the WAL.

        Writes that arrive while a commit is under way are gathered into the next one: under load
        many callers share one transaction and one thread hop, idle a write costs one of each.
        Each job runs inside its own SAVEPOINT, so one failing job fails only its own caller.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="store-group-commit")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # aiosqlite has no public call for "run this function on your thread"; _execute
                # is that call (pinned by the version range in pyproject).
                outcomes = await self.db._execute(_run_batch, self.db._conn, [job for job, _ in batch])
            except BaseException as exc:  # the commit itself failed: nothing of the batch is stored
                for hook in self.rollback_hooks:
                    hook()
                error = StoreError(f"write to {self.path} failed: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher], timeout=10)
        if self._db is not None:
            db, self._db = self._db, None
            try:
                await db.close()
            except Exception:  # closing after a failed open must not mask the first error
                pass


def _run_batch(conn: sqlite3.Connection, jobs: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
    """On the database thread: one transaction, a savepoint per job."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((True, job(conn)))
                conn.execute("RELEASE job")
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes
