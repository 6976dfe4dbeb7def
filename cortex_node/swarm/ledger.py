"""The directive ledger: the one place where either side of a directive is written down.

"Exactly one terminal state per directive and side" is kept here: a row is opened once, and its
outcome is recorded by a guarded update that only moves a row out of ``pending``/``dispatched``.
The table between the audit trail's statuses and A2A task states is here too, once.
"""

from __future__ import annotations

from typing import Any, Callable

from cortex_node.a2a.wire import data_part
from cortex_node.clock import Clock
from cortex_node.contracts import (
    DirectiveRecord,
    DirectiveResultStatus,
    RunMetrics,
    DirectiveRole,
    DirectiveStatus,
    SwarmDirective,
    SwarmDirectiveResult,
    project,
    to_wire,
)
from cortex_node.store.db import Store
from cortex_node.store.directives import DirectiveRepo
from cortex_node.swarm.envelope import RESULT_ARTIFACT

EventSink = Callable[[str, dict], None]

# the audit trail's status -> the A2A task state of the same directive (timed_out has no task
# state of its own: it is a failure, told apart by the result's status)
TASK_STATE = {
    DirectiveStatus.PENDING: "TASK_STATE_WORKING",
    DirectiveStatus.DISPATCHED: "TASK_STATE_WORKING",
    DirectiveStatus.COMPLETED: "TASK_STATE_COMPLETED",
    DirectiveStatus.FAILED: "TASK_STATE_FAILED",
    DirectiveStatus.CANCELLED: "TASK_STATE_CANCELED",
    DirectiveStatus.TIMED_OUT: "TASK_STATE_FAILED",
}


def status_of(result: SwarmDirectiveResult) -> DirectiveStatus:
    return DirectiveStatus(result.status.value)


def result_of(record: DirectiveRecord, node_id: str) -> SwarmDirectiveResult:
    """The directive result a finished row describes (what the target's task artifact carries)."""
    return SwarmDirectiveResult(record.directive_id, node_id, DirectiveResultStatus(record.status.value),
                                output=record.output, error=record.error, metrics=project(RunMetrics, record),
                                completed_at=record.completed_at)


def task_from_record(record: DirectiveRecord, node_id: str) -> dict[str, Any]:
    """The A2A task of an inbound row: for a replay, or a GetTask after a restart."""
    task: dict[str, Any] = {
        "id": record.directive_id, "contextId": f"swarm.{record.directive_id}",
        "status": {"state": TASK_STATE[record.status], "timestamp": record.updated_at},
    }
    if record.status.terminal:
        task["artifacts"] = [{"artifactId": f"{record.directive_id}.result", "name": RESULT_ARTIFACT,
                              "parts": [data_part(to_wire(result_of(record, node_id)))]}]
    return task


class DirectiveLedger:
    def __init__(self, store: Store, clock: Clock, on_event: EventSink) -> None:
        self._store = store
        self._clock = clock
        self._on_event = on_event
        self._repo = DirectiveRepo(store)

    async def open(self, d: SwarmDirective, role: DirectiveRole, status: DirectiveStatus) -> bool:
        """Write a directive's row (``dispatched`` outbound, ``pending`` inbound). False when this
        side already has a row for the id: a replay."""
        now = self._clock.now_ms()
        return await self._store.write(lambda conn: DirectiveRepo.insert(conn, d, status, role, now))

    async def record(self, role: DirectiveRole, result: SwarmDirectiveResult) -> DirectiveRecord | None:
        """Record the outcome of an open row, once: a row that has ended keeps its outcome.
        Returns the row as it stands afterwards (None when there is none)."""
        now = self._clock.now_ms()
        written, record = await self._store.write(lambda conn: DirectiveRepo.finish(conn, role, result, now))
        if written:
            self._finished(result, role)
        return record

    async def record_first(self, d: SwarmDirective, role: DirectiveRole, result: SwarmDirectiveResult) -> bool:
        """Write a row and its outcome at once (work finished before it was written down: a
        rejection, an expired TTL, an inline answer). False when a row existed: a replay."""
        now = self._clock.now_ms()
        written = await self._store.write(
            lambda conn: DirectiveRepo.insert(conn, d, status_of(result), role, now, result))
        if written:
            self._finished(result, role)
        return written

    def _finished(self, result: SwarmDirectiveResult, role: DirectiveRole) -> None:
        self._on_event("directive.finished", {"directiveId": result.directive_id, "status": result.status.value,
                                              "role": role.value})

    async def get(self, directive_id: str, role: DirectiveRole | None = None) -> DirectiveRecord | None:
        return await self._repo.get(directive_id, role)

    async def list(self, status: DirectiveStatus | None, limit: int) -> list[DirectiveRecord]:
        return await self._repo.list(status, limit)

    async def unfinished(self, role: DirectiveRole) -> list[DirectiveRecord]:
        return await self._repo.unfinished(role)

    async def counts(self) -> dict[tuple[str, str, str], int]:
        return await self._repo.counts()
