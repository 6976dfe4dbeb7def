"""``swarm_directives``: the audit trail of every directive this node sent or received."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cortex_node import jsonfast
from cortex_node.contracts import DirectiveStatus, SwarmDirective, format_ts
from cortex_node.store.db import Store

_FIELDS = (
    "directive_id, source_node_id, target_node_id, kind, payload, priority, status, output, error, "
    "tokens_in, tokens_out, cost_usd, duration_ms, tool_calls, parent_directive_id, ttl_ms, "
    "dispatched_at, completed_at, created_at, updated_at, role"
)
_KEYS = [
    "directiveId", "sourceNodeId", "targetNodeId", "kind", "payload", "priority", "status", "output",
    "error", "tokensIn", "tokensOut", "costUsd", "durationMs", "toolCalls", "parentDirectiveId", "ttlMs",
    "dispatchedAt", "completedAt", "createdAt", "updatedAt", "role",
]


def _row_to_wire(r: Any) -> dict[str, Any]:
    doc = dict(zip(_KEYS, r))
    doc["payload"] = json.loads(doc["payload"] or "{}")
    doc["output"] = json.loads(doc["output"]) if doc["output"] is not None else None
    return doc


def _text(doc: Any) -> str:
    return jsonfast.dumps(doc).decode()


class DirectiveRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # writes: plain sqlite3 calls for a Store.write job
    @staticmethod
    def insert(conn: sqlite3.Connection, d: SwarmDirective, status: DirectiveStatus, role: str, now_ms: int,
               output: Any = None, error: str | None = None, metrics: dict[str, Any] | None = None) -> bool:
        """False when the directive id is already recorded for this role (a replay). Each side of a
        directive keeps its own row (role outbound on the dispatcher, inbound on the target), so a
        node that sends to itself holds both. A terminal ``status`` records the outcome in the
        same write (work that was finished before it was first written down)."""
        ts = format_ts(now_ms)
        m = metrics or {}
        cur = conn.execute(
            f"INSERT INTO swarm_directives ({_FIELDS}) VALUES ({', '.join('?' * 21)}) "
            "ON CONFLICT (directive_id, role) DO NOTHING",
            (d.directive_id, d.source_node_id, d.target_node_id, d.kind.value, _text(d.payload),
             d.priority.value, status.value, _text(output) if output is not None else None, error,
             int(m.get("tokensIn", 0)), int(m.get("tokensOut", 0)), float(m.get("costUsd", 0.0)),
             int(m.get("durationMs", 0)), int(m.get("toolCalls", 0)), d.parent_directive_id, d.ttl_ms,
             ts if status is DirectiveStatus.DISPATCHED else None, ts if status.terminal else None, ts, ts, role),
        )
        return cur.rowcount == 1

    @staticmethod
    def finish(conn: sqlite3.Connection, directive_id: str, role: str, status: DirectiveStatus, output: Any,
               error: str | None, metrics: dict[str, Any], now_ms: int) -> tuple[bool, dict[str, Any] | None]:
        """Record the terminal state once: a row already terminal is never overwritten. Returns
        whether this call wrote it, and the row as it now stands (no second read needed)."""
        ts = format_ts(now_ms)
        row = conn.execute(
            "UPDATE swarm_directives SET status = ?, output = ?, error = ?, tokens_in = ?, tokens_out = ?,"
            " cost_usd = ?, duration_ms = ?, tool_calls = ?, completed_at = ?, updated_at = ?"
            f" WHERE directive_id = ? AND role = ? AND status IN ('pending', 'dispatched') RETURNING {_FIELDS}",
            (status.value, _text(output) if output is not None else None, error,
             int(metrics.get("tokensIn", 0)), int(metrics.get("tokensOut", 0)), float(metrics.get("costUsd", 0.0)),
             int(metrics.get("durationMs", 0)), int(metrics.get("toolCalls", 0)), ts, ts, directive_id, role),
        ).fetchone()
        if row is not None:
            return True, _row_to_wire(row)
        row = conn.execute(f"SELECT {_FIELDS} FROM swarm_directives WHERE directive_id = ? AND role = ?",
                           (directive_id, role)).fetchone()
        return False, _row_to_wire(row) if row else None

    async def get(self, directive_id: str, role: str | None = None) -> dict[str, Any] | None:
        """The row of one side, or (role None) the dispatcher's row when this node holds both."""
        sql = f"SELECT {_FIELDS} FROM swarm_directives WHERE directive_id = ?"
        params: tuple = (directive_id,)
        if role is not None:
            sql += " AND role = ?"
            params = (directive_id, role)
        async with self.store.db.execute(sql + " ORDER BY role DESC LIMIT 1", params) as cur:
            row = await cur.fetchone()
        return _row_to_wire(row) if row else None

    async def list(self, status: DirectiveStatus | None, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        if status is None:
            sql, params = f"SELECT {_FIELDS} FROM swarm_directives ORDER BY id DESC LIMIT ?", (limit,)
        else:
            sql = f"SELECT {_FIELDS} FROM swarm_directives WHERE status = ? ORDER BY id DESC LIMIT ?"
            params = (status.value, limit)
        async with self.store.db.execute(sql, params) as cur:
            return [_row_to_wire(r) for r in await cur.fetchall()]

    async def unfinished(self, role: str) -> list[dict[str, Any]]:
        async with self.store.db.execute(
            f"SELECT {_FIELDS} FROM swarm_directives WHERE role = ? AND status IN ('pending', 'dispatched') ORDER BY id",
            (role,),
        ) as cur:
            return [_row_to_wire(r) for r in await cur.fetchall()]

    async def counts(self) -> dict[tuple[str, str, str], int]:
        async with self.store.db.execute(
            "SELECT role, kind, status, COUNT(*) FROM swarm_directives GROUP BY role, kind, status"
        ) as cur:
            return {(r[0], r[1], r[2]): r[3] for r in await cur.fetchall()}
