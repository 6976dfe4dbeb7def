"""The receiving side of directives: admission, a priority queue and bounded workers.

This is what the A2A server hands a message to (its handler protocol). A message is read as a
directive (or, as plain text, a question for the swarm-ops skill). Admission runs before
anything does: sealed or draining (query_resources and sync_state are still served while
draining), tier policy, an already-expired TTL, a replayed directive id. Admitted directives wait
in a priority queue (critical > high > normal > low, FIFO within a level) for one of
``max_workers`` workers, which run the kind (swarm/kinds). Every directive reaches exactly one
terminal state, in its ledger row and in its A2A task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from cortex_node.a2a.errors import InvalidParamsError
from cortex_node.a2a.tasks import TaskHandle, TaskStore
from cortex_node.a2a.wire import data_part, make_message, text_part
from cortex_node.contracts import (
    MAX_QUEUED,
    DirectiveKind,
    DirectiveResultStatus,
    DirectiveRole,
    DirectiveStatus,
    Lifecycle,
    QueueFigures,
    RunMetrics,
    SwarmDirective,
    SwarmDirectiveResult,
    format_ts,
    parse_ts,
    to_wire,
)
from cortex_node.kernel.agents import UnknownAgentType
from cortex_node.kernel.commands import ProcessStartError
from cortex_node.kernel.policy import NotPermitted
from cortex_node.swarm.envelope import RESULT_ARTIFACT, EnvelopeError, message_to_directive
from cortex_node.swarm.kinds import KindContext, Outcome, queued_kinds
from cortex_node.swarm.ledger import TASK_STATE, DirectiveLedger, status_of, task_from_record

log = logging.getLogger("cortex.directives")

INBOUND = DirectiveRole.INBOUND
# served even while draining: they are how an operator watches and steers a draining fleet
SERVED_WHILE_DRAINING = (DirectiveKind.QUERY_RESOURCES, DirectiveKind.SYNC_STATE)
OVERRUN_GRACE_S = 5.0  # a kind enforces its TTL itself; this outer bound only catches one that does not
# MAX_QUEUED directives wait for a worker; more are refused (queue_full). With the workers this stays
# below the A2A task store's size, so no live task is ever evicted.


class Rejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Expired(Exception):
    pass


@dataclass(order=True)
class _Job:
    sort_key: tuple[int, int]
    directive: SwarmDirective = field(compare=False)
    payload: Any = field(compare=False)  # the kind's typed payload, or the error that reading it raised
    handle: TaskHandle = field(compare=False)
    deadline_ms: int = field(compare=False)
    runner: asyncio.Task | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)
    cancel_reason: str = field(default="cancelled by the dispatcher", compare=False)
    recording: bool = field(default=False, compare=False)


class WorkQueue:
    """Implements the A2A server's handler protocol for this node."""

    def __init__(self, ctx: KindContext, ledger: DirectiveLedger, *, lifecycle: Callable[[], Lifecycle],
                 resources: Callable[[], dict[str, Any]], ops_reply: Callable[[str], Awaitable[str]],
                 on_event: Callable[[str, dict], None], max_queued: int = MAX_QUEUED) -> None:
        self._ctx = ctx
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._resources = resources
        self._ops_reply = ops_reply
        self._on_event = on_event
        self._kinds = queued_kinds()
        self._max_queued = max_queued
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self._jobs: dict[str, _Job] = {}
        self._running = 0
        self._seq = itertools.count()
        self._workers: list[asyncio.Task] = []
        self._stopping = False

    @property
    def node_id(self) -> str:
        return self._ctx.node_id

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        # Work that was queued or running when the node died is not run again after a restart:
        # the dispatcher may have retried elsewhere, and "at most once" is the promise.
        for record in await self._ledger.unfinished(INBOUND):
            await self._ledger.record(INBOUND, SwarmDirectiveResult(
                record.directive_id, self.node_id, DirectiveResultStatus.FAILED,
                error="the node restarted before the directive finished"))
        self._workers = [asyncio.create_task(self._worker(), name=f"directive-worker-{i}")
                         for i in range(self._ctx.settings.max_workers)]

    async def stop(self, deadline_s: float) -> None:
        """Finish in-flight work within the deadline, cancel what remains, stop the workers."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while (self._running or not self._queue.empty()) and loop.time() < end:
            await asyncio.sleep(0.05)
        self._stopping = True
        for job in list(self._jobs.values()):
            await self._cancel_job(job, "the node is shutting down")
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._ctx.agents.shutdown(grace=2.0)

    async def cancel_all(self, why: str) -> int:
        """Cancel everything queued or running (the drain deadline); returns how many."""
        jobs = list(self._jobs.values())
        for job in jobs:
            await self._cancel_job(job, why)
        for job in jobs:
            await job.handle.wait_terminal(timeout=10)
        return len(jobs)

    def figures(self) -> QueueFigures:
        return QueueFigures(queued=self._queue.qsize(), running=self._running, workers=self._ctx.settings.max_workers)

    def workers_alive(self) -> int:
        return sum(not w.done() for w in self._workers)

    def pending(self) -> int:
        """Directives admitted and not yet finished."""
        return len(self._jobs)

    # --- the A2A handler protocol ---------------------------------------------------------------
    async def handle_message(self, message: dict, params: dict, tasks: TaskStore) -> dict | TaskHandle:
        now = self._ctx.clock.now_ms()
        try:
            directive = message_to_directive(message, target_node_id=self.node_id, now_ms=now)
        except EnvelopeError as exc:
            raise InvalidParamsError(f"malformed directive: {exc}") from None
        if directive is None:
            text = " ".join(p["text"] for p in message.get("parts", []) if isinstance(p.get("text"), str))
            reply = await self._ops_reply(text)
            return make_message("ROLE_AGENT", [text_part(reply)], context_id=message.get("contextId"))
        return await self.submit(directive, tasks)

    async def submit(self, d: SwarmDirective, tasks: TaskStore) -> TaskHandle:
        existing = tasks.get(d.directive_id)
        if existing is not None:
            return existing  # a replay: the same task, never the work twice
        now = self._ctx.clock.now_ms()
        # no history: the directive is in its row, and echoing it back doubles every answer
        handle = tasks.create(task_id=d.directive_id, context_id=f"swarm.{d.directive_id}",
                              metadata={"swarmKind": d.kind.value, "swarmSourceNodeId": d.source_node_id})
        self._on_event("directive.received", {"directiveId": d.directive_id, "kind": d.kind.value})
        try:
            payload, deadline = self._admit(d, now)
        except Rejected as exc:
            await self._finish_first(d, handle, self._result(d, DirectiveResultStatus.FAILED,
                                                             error=f"rejected: {exc.reason}: {exc}"), rejected=exc.reason)
            return handle
        except _Expired:
            await self._finish_first(d, handle, self._result(
                d, DirectiveResultStatus.TIMED_OUT, error="the directive's TTL had expired on arrival; it did not run"))
            return handle
        if d.kind is DirectiveKind.QUERY_RESOURCES:
            # a read: answered at once, outside the work queue, so an operator's view of a node
            # never waits behind the node's work; its row is written once, with the outcome
            await self._finish_first(d, handle, self._result(d, DirectiveResultStatus.COMPLETED,
                                                             output=self._resources_now()))
            return handle
        if not await self._ledger.open(d, INBOUND, DirectiveStatus.PENDING):
            return await self._replayed(handle)
        job = _Job((-d.priority.rank, next(self._seq)), d, payload, handle, deadline)
        self._jobs[d.directive_id] = job
        self._queue.put_nowait(job)
        return handle

    def _result(self, d: SwarmDirective, status: DirectiveResultStatus, *, output: Any = None,
                error: str | None = None, metrics: RunMetrics | None = None) -> SwarmDirectiveResult:
        return SwarmDirectiveResult(d.directive_id, self.node_id, status, output=output, error=error,
                                    metrics=metrics or RunMetrics(), completed_at=format_ts(self._ctx.clock.now_ms()))

    def _resources_now(self) -> dict[str, Any]:
        doc = self._resources()
        doc["queue"] = to_wire(self.figures())
        return doc

    async def cancel_task(self, handle: TaskHandle) -> None:
        job = self._jobs.get(handle.task_id)
        if job is not None:
            await self._cancel_job(job, "cancelled by the dispatcher")
            # the worker records the outcome once the kind has cleaned up (agent or process group
            # killed); wait for it so the answer carries the result
            await handle.wait_terminal(timeout=10)

    async def load_task(self, task_id: str) -> dict | None:
        record = await self._ledger.get(task_id, INBOUND)
        return task_from_record(record, self.node_id) if record is not None else None

    # --- admission ------------------------------------------------------------------------------
    def _admit(self, d: SwarmDirective, now: int) -> tuple[Any, int]:
        """The kind's typed payload (or the error reading it raised: a bad payload fails when it
        runs, with the reader's message) and the deadline. Raises Rejected or _Expired."""
        lifecycle = self._lifecycle()
        if lifecycle is Lifecycle.SEALED:
            raise Rejected("node_sealed", "the node is sealed and leaving the swarm")
        if lifecycle is Lifecycle.DRAINING and d.kind not in SERVED_WHILE_DRAINING:
            raise Rejected("node_draining", "the node is draining and takes no new work")
        if d.kind is not DirectiveKind.QUERY_RESOURCES and self._queue.qsize() >= self._max_queued:
            raise Rejected("queue_full", f"{self._queue.qsize()} directives are waiting for a worker, the limit; "
                                         "try again later or another node")
        payload: Any = None
        kind = self._kinds.get(d.kind)
        if kind is not None:
            try:
                payload = kind.parse(d.payload, self._ctx)
            except ValueError as exc:
                payload = exc
            else:
                try:
                    kind.admit(payload, self._ctx)
                except NotPermitted as exc:
                    raise Rejected("not_permitted", str(exc)) from None
        created = parse_ts(d.created_at) if d.created_at else now
        expires = parse_ts(d.expires_at) if d.expires_at else created + d.ttl_ms
        if expires <= now:
            raise _Expired()
        # the receiver's own view of the TTL bounds the run too, whatever the sender's clock says
        return payload, min(expires, now + d.ttl_ms)

    # --- running --------------------------------------------------------------------------------
    async def _worker(self) -> None:
        # ``_stopping`` ends the loop too: a cancel that arrives as a job's result does can be
        # swallowed by asyncio.wait_for (Python 3.11), and the worker would then wait for work
        while not self._stopping:
            job = await self._queue.get()
            if job.cancelled:
                continue
            self._running += 1
            try:
                job.runner = asyncio.current_task()
                await self._run(job)
            except asyncio.CancelledError:
                if not job.cancelled:
                    raise
                await self._finish_cancelled(job)
                # a cancelled job leaves the worker alive for the next one, unless the node is
                # stopping: its cancel and the job's can arrive as one CancelledError, and
                # swallowing both would leave stop() waiting for this worker for ever
                if self._stopping:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
            finally:
                self._running -= 1
                self._jobs.pop(job.directive.directive_id, None)

    async def _run(self, job: _Job) -> None:
        d = job.directive
        job.handle.set_working()
        clock = self._ctx.clock
        start = clock.monotonic()
        timeout = (job.deadline_ms - clock.now_ms()) / 1000
        try:
            if timeout <= 0:  # its TTL ran out while it waited for a worker: it never starts
                outcome = Outcome(DirectiveResultStatus.TIMED_OUT,
                                  error=f"the TTL of {d.ttl_ms} ms ran out while it waited in the queue; it did not run")
            else:
                outcome = await asyncio.wait_for(self._execute(job, timeout), timeout + OVERRUN_GRACE_S)
        except (asyncio.TimeoutError, TimeoutError):
            outcome = Outcome(DirectiveResultStatus.TIMED_OUT, error=f"the TTL of {d.ttl_ms} ms expired while it ran")
        except (ValueError, UnknownAgentType, ProcessStartError) as exc:
            outcome = Outcome(DirectiveResultStatus.FAILED, error=str(exc))
        except NotPermitted as exc:
            outcome = Outcome(DirectiveResultStatus.FAILED, error=f"not_permitted: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one kind must not take the worker down
            log.exception("directive %s (%s) failed", d.directive_id, d.kind.value)
            outcome = Outcome(DirectiveResultStatus.FAILED, error=f"internal error: {exc}")
        if not outcome.metrics.duration_ms:
            outcome.metrics.duration_ms = int((clock.monotonic() - start) * 1000)
        # from here the outcome is being stored: a cancel arriving now must not contradict it
        job.recording = True
        await asyncio.shield(self._finish(d, job.handle, self._result(
            d, outcome.status, output=outcome.output, error=outcome.error, metrics=outcome.metrics)))

    async def _execute(self, job: _Job, timeout: float) -> Outcome:
        if isinstance(job.payload, ValueError):
            raise job.payload
        return await self._kinds[job.directive.kind].run(self._ctx, job.directive, job.payload, timeout)

    # --- results --------------------------------------------------------------------------------
    async def _finish(self, d: SwarmDirective, handle: TaskHandle, result: SwarmDirectiveResult) -> None:
        """A queued directive's outcome: its row first, then its task."""
        await self._ledger.record(INBOUND, result)
        _finish_task(handle, result)

    async def _finish_first(self, d: SwarmDirective, handle: TaskHandle, result: SwarmDirectiveResult,
                            rejected: str | None = None) -> None:
        """An outcome before the directive had a row (rejected, expired, answered at once). If a
        row exists after all, this is a replay from before a restart and its stored outcome wins."""
        if not await self._ledger.record_first(d, INBOUND, result):
            await self._replayed(handle)
            return
        _finish_task(handle, result, rejected)

    async def _cancel_job(self, job: _Job, why: str) -> None:
        if job.cancelled or job.recording:  # too late: the result is being stored and wins
            return
        job.cancelled = True
        job.cancel_reason = why
        if job.runner is not None and not job.runner.done():
            job.runner.cancel()  # the worker records the cancellation when the kind has cleaned up
        else:
            self._jobs.pop(job.directive.directive_id, None)
            await self._finish_cancelled(job, why)

    async def _finish_cancelled(self, job: _Job, why: str | None = None) -> None:
        await self._finish(job.directive, job.handle, self._result(
            job.directive, DirectiveResultStatus.CANCELLED, error=why or job.cancel_reason))

    async def _replayed(self, handle: TaskHandle) -> TaskHandle:
        """A replay of a directive this node recorded before a restart: the task answers with the
        stored outcome (or as still working), and the work never runs again."""
        record = await self._ledger.get(handle.task_id, INBOUND)
        if record is None:
            handle.finish("TASK_STATE_FAILED", text="lost record")
            return handle
        task = task_from_record(record, self.node_id)
        for artifact in task.get("artifacts", []):
            handle.add_artifact(artifact["parts"], name=artifact.get("name"))
        if record.status.terminal:
            handle.finish(task["status"]["state"], text=record.error)
        return handle


def _finish_task(handle: TaskHandle, result: SwarmDirectiveResult, rejected: str | None = None) -> None:
    """The task's artifact carries the directive result; its state follows the one table."""
    handle.add_artifact([data_part(to_wire(result))], name=RESULT_ARTIFACT)
    if rejected:
        handle.finish("TASK_STATE_REJECTED", text=result.error, data={"reason": rejected})
    else:
        handle.finish(TASK_STATE[status_of(result)], text=result.error)
