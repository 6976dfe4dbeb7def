"""``swarm_directives``: the audit trail of every directive this node sent or received.

The columns are the fields of ``contracts.DirectiveRecord`` (a directive's identity, its outcome
and the usage vector of the run), so the table, the REST answer and the OpenAPI schema share one
field list.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from cortex_node import jsonfast
from cortex_node.contracts import (
    RunMetrics,
    DirectiveKind,
    DirectivePriority,
    DirectiveRecord,
    DirectiveRole,
    DirectiveStatus,
    SwarmDirective,
    SwarmDirectiveResult,
    format_ts,
)
from cortex_node.store.db import Store

_COLUMNS = tuple(f.name for f in dataclasses.fields(DirectiveRecord))
_FIELDS = ", ".join(_COLUMNS)
_METRICS = tuple(f.name for f in dataclasses.fields(RunMetrics))
_ENUMS = {"kind": DirectiveKind, "priority": DirectivePriority, "status": DirectiveStatus, "role": DirectiveRole}
_INSERT = (f"INSERT INTO swarm_directives ({_FIELDS}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           "ON CONFLICT (directive_id, role) DO NOTHING")
_FINISH = (
    "UPDATE swarm_directives SET status = ?, output = ?, error = ?, "
    + "".join(f"{m} = ?, " for m in _METRICS)
    + f"completed_at = ?, updated_at = ? WHERE directive_id = ? AND role = ? AND status IN ('pending', 'dispatched')"
    f" RETURNING {_FIELDS}"
)
_UNFINISHED = ("pending", "dispatched")


def _record(r: Any) -> DirectiveRecord:
    doc = dict(zip(_COLUMNS, r))
    for name, enum_type in _ENUMS.items():
        doc[name] = enum_type(doc[name])
    doc["payload"] = json.loads(doc["payload"] or "{}")
    doc["output"] = json.loads(doc["output"]) if doc["output"] is not None else None
    return DirectiveRecord(**doc)


def _text(doc: Any) -> str | None:
    return jsonfast.dumps(doc).decode() if doc is not None else None


def _metric_values(metrics: RunMetrics) -> list[Any]:
    return [getattr(metrics, m) for m in _METRICS]


class DirectiveRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # writes: plain sqlite3 calls for a Store.write job
    @staticmethod
    def insert(conn: sqlite3.Connection, d: SwarmDirective, status: DirectiveStatus, role: DirectiveRole,
               now_ms: int, result: SwarmDirectiveResult | None = None) -> bool:
        """False when the directive id is already recorded for this role (a replay). Each side of a
        directive keeps its own row (role outbound on the dispatcher, inbound on the target), so a
        node that sends to itself holds both. With a ``result`` the outcome is recorded in the
        same write (work that was finished before it was first written down)."""
        ts = format_ts(now_ms)
        metrics = result.metrics if result is not None else RunMetrics()
        values = {
            "directive_id": d.directive_id, "source_node_id": d.source_node_id, "target_node_id": d.target_node_id,
            "kind": d.kind.value, "payload": _text(d.payload), "priority": d.priority.value, "status": status.value,
            "role": role.value, "ttl_ms": d.ttl_ms, "output": _text(result.output) if result else None,
            "error": result.error if result else None, "parent_directive_id": d.parent_directive_id,
            "dispatched_at": ts if status is DirectiveStatus.DISPATCHED else None,
            "completed_at": ts if status.terminal else None, "created_at": ts, "updated_at": ts,
            **dict(zip(_METRICS, _metric_values(metrics))),
        }
        cur = conn.execute(_INSERT, [values[c] for c in _COLUMNS])
        return cur.rowcount == 1

    @staticmethod
    def finish(conn: sqlite3.Connection, role: DirectiveRole, result: SwarmDirectiveResult,
               now_ms: int) -> tuple[bool, DirectiveRecord | None]:
        """Record the terminal state once: a row already terminal is never overwritten. Returns
        whether this call wrote it, and the row as it now stands (no second read needed)."""
        ts = format_ts(now_ms)
        row = conn.execute(_FINISH, (result.status.value, _text(result.output), result.error,
                                     *_metric_values(result.metrics), ts, ts, result.directive_id,
                                     role.value)).fetchone()
        if row is not None:
            return True, _record(row)
        row = conn.execute(f"SELECT {_FIELDS} FROM swarm_directives WHERE directive_id = ? AND role = ?",
                           (result.directive_id, role.value)).fetchone()
        return False, _record(row) if row else None

    async def get(self, directive_id: str, role: DirectiveRole | None = None) -> DirectiveRecord | None:
        """The row of one side, or (role None) the dispatcher's row when this node holds both."""
        sql = f"SELECT {_FIELDS} FROM swarm_directives WHERE directive_id = ?"
        params: tuple = (directive_id,)
        if role is not None:
            sql += " AND role = ?"
            params = (directive_id, role.value)
        async with self.store.db.execute(sql + " ORDER BY role DESC LIMIT 1", params) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

    async def list(self, status: DirectiveStatus | None, limit: int) -> list[DirectiveRecord]:
        """Newest first."""
        if status is None:
            sql, params = f"SELECT {_FIELDS} FROM swarm_directives ORDER BY id DESC LIMIT ?", (limit,)
        else:
            sql = f"SELECT {_FIELDS} FROM swarm_directives WHERE status = ? ORDER BY id DESC LIMIT ?"
            params = (status.value, limit)
        async with self.store.db.execute(sql, params) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def unfinished(self, role: DirectiveRole) -> list[DirectiveRecord]:
        async with self.store.db.execute(
            f"SELECT {_FIELDS} FROM swarm_directives WHERE role = ? AND status IN {_UNFINISHED} ORDER BY id",
            (role.value,),
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def counts(self) -> dict[tuple[str, str, str], int]:
        async with self.store.db.execute(
            "SELECT role, kind, status, COUNT(*) FROM swarm_directives GROUP BY role, kind, status"
        ) as cur:
            return {(r[0], r[1], r[2]): r[3] for r in await cur.fetchall()}
