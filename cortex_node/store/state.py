"""``swarm_state``: the sync_state namespaces (memory, skills, config) as last-writer-wins maps.
A version is (hlc, origin node id); the greater version wins, on every node alike."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from cortex_node.contracts import format_ts
from cortex_node.store.db import Store


@dataclass(frozen=True)
class StateEntry:
    key: str
    value: Any
    hlc: int
    origin: str

    @property
    def version(self) -> tuple[int, str]:
        return (self.hlc, self.origin)


class StateRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def all(self, namespace: str) -> dict[str, StateEntry]:
        async with self.store.db.execute(
            "SELECT key, value, hlc, origin FROM swarm_state WHERE namespace = ?", (namespace,)
        ) as cur:
            rows = await cur.fetchall()
        return {r[0]: StateEntry(r[0], json.loads(r[1]), r[2], r[3]) for r in rows}

    async def get(self, namespace: str, key: str) -> StateEntry | None:
        async with self.store.db.execute(
            "SELECT key, value, hlc, origin FROM swarm_state WHERE namespace = ? AND key = ?", (namespace, key)
        ) as cur:
            r = await cur.fetchone()
        return StateEntry(r[0], json.loads(r[1]), r[2], r[3]) if r else None

    @staticmethod
    def has(conn: sqlite3.Connection, namespace: str, key: str) -> bool:
        return conn.execute("SELECT 1 FROM swarm_state WHERE namespace = ? AND key = ?",
                            (namespace, key)).fetchone() is not None

    @staticmethod
    def count(conn: sqlite3.Connection, namespace: str) -> int:
        return conn.execute("SELECT COUNT(*) FROM swarm_state WHERE namespace = ?", (namespace,)).fetchone()[0]

    @staticmethod
    def put_if_newer(conn: sqlite3.Connection, namespace: str, entry: StateEntry, now_ms: int) -> bool:
        """A Store.write job step: write the entry unless the stored version is newer or equal."""
        current = conn.execute("SELECT hlc, origin FROM swarm_state WHERE namespace = ? AND key = ?",
                               (namespace, entry.key)).fetchone()
        if current is not None and (current[0], current[1]) >= entry.version:
            return False
        conn.execute(
            "INSERT INTO swarm_state (namespace, key, value, hlc, origin, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, hlc = excluded.hlc,"
            " origin = excluded.origin, updated_at = excluded.updated_at",
            (namespace, entry.key, json.dumps(entry.value), entry.hlc, entry.origin, format_ts(now_ms)),
        )
        return True
