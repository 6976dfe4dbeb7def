"""``swarm_node_events``: each node's history, a bounded log of what happened to each node (registered, restarted,
disconnected, recovered, draining, undrained, sealed)."""

from __future__ import annotations

import sqlite3
from cortex_node.contracts import NodeHistoryEntry, format_ts
from cortex_node.store.db import Store

EVENTS_KEPT_PER_NODE = 200


class NodeHistoryRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def add(conn: sqlite3.Connection, node_id: str, kind: str, detail: str, at_ms: int) -> None:
        """A write for a Store.write job."""
        conn.execute(
            "INSERT INTO swarm_node_events (node_id, kind, detail, at) VALUES (?, ?, ?, ?)",
            (node_id, kind, detail, format_ts(at_ms)),
        )
        conn.execute(
            "DELETE FROM swarm_node_events WHERE node_id = ? AND id <= ("
            " SELECT id FROM swarm_node_events WHERE node_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (node_id, node_id, EVENTS_KEPT_PER_NODE),
        )

    async def list(self, node_id: str, limit: int = 50) -> list[NodeHistoryEntry]:
        async with self.store.db.execute(
            "SELECT id, kind, detail, at FROM swarm_node_events WHERE node_id = ? ORDER BY id DESC LIMIT ?",
            (node_id, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [NodeHistoryEntry(r[0], node_id, r[1], r[2], r[3]) for r in rows]
