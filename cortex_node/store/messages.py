"""``swarm_messages``: the forward_message inbox. A message waits here until an agent of its
session (or the named agent) runs and it has been written to that agent's stdin."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from cortex_node.contracts import InboxMessage, format_ts
from cortex_node.store.db import Store

_COLS = ", ".join(f.name for f in dataclasses.fields(InboxMessage))


def _message(r: Any) -> InboxMessage:
    return InboxMessage(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8])


class MessageRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def add(conn: sqlite3.Connection, *, directive_id: str, session_id: str | None, agent_id: str | None,
            source_node_id: str, message: Any, delivered: bool, now_ms: int) -> int:
        ts = format_ts(now_ms)
        cur = conn.execute(
            f"INSERT INTO swarm_messages ({_COLS.split(', ', 1)[1]}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (directive_id, session_id, agent_id, source_node_id, json.dumps(message),
             "delivered" if delivered else "queued", ts, ts if delivered else None),
        )
        return cur.lastrowid

    async def queued_for(self, session_id: str | None, agent_id: str | None) -> list[InboxMessage]:
        async with self.store.db.execute(
            f"SELECT {_COLS} FROM swarm_messages WHERE status = 'queued' AND (session_id = ? OR agent_id = ?) ORDER BY id",
            (session_id, agent_id),
        ) as cur:
            return [_message(r) for r in await cur.fetchall()]

    @staticmethod
    def mark_delivered(conn: sqlite3.Connection, message_id: int, now_ms: int) -> None:
        conn.execute(
            "UPDATE swarm_messages SET status = 'delivered', delivered_at = ? WHERE id = ?", (format_ts(now_ms), message_id)
        )

    async def list(self, session_id: str | None, limit: int) -> list[InboxMessage]:
        if session_id is None:
            sql, params = f"SELECT {_COLS} FROM swarm_messages ORDER BY id DESC LIMIT ?", (limit,)
        else:
            sql = f"SELECT {_COLS} FROM swarm_messages WHERE session_id = ? ORDER BY id DESC LIMIT ?"
            params = (session_id, limit)
        async with self.store.db.execute(sql, params) as cur:
            return [_message(r) for r in await cur.fetchall()]
