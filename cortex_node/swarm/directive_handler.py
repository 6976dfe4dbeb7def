"""The receiving side of directives: admission, a priority queue, bounded workers, the five kinds.

Admission runs before anything does: draining/sealed (query_resources and sync_state are still
served while draining), tier policy, an already-expired TTL, a replayed directive id. Admitted
directives wait in a priority queue (critical > high > normal > low, FIFO within a level) for
one of ``max_workers`` workers. Every directive has one inbound row in ``swarm_directives`` and
reaches exactly one terminal state there and in its A2A task.
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
from cortex_node.clock import Clock, HybridLogicalClock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    DirectiveKind,
    DirectiveMetrics,
    DirectiveResultStatus,
    DirectiveStatus,
    Lifecycle,
    SwarmDirective,
    SwarmDirectiveResult,
    format_ts,
    parse_ts,
    to_wire,
)
from cortex_node.kernel.agents import AgentRuntime, UnknownAgentType
from cortex_node.kernel.commands import ProcessStartError, parse_execute_payload, run_command
from cortex_node.kernel.policy import NotPermitted, check_execute, check_spawn
from cortex_node.store.db import Store
from cortex_node.store.directives import DirectiveRepo
from cortex_node.store.messages import MessageRepo
from cortex_node.store.state import StateEntry, StateRepo
from cortex_node.swarm.transport import RESULT_ARTIFACT, EnvelopeError, message_to_directive

log = logging.getLogger("cortex.directives")

INBOUND = "inbound"
STATE_NAMESPACES = ("memory", "skills", "config")
SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "credential", "private_key")
# served even while draining: they are how an operator watches and steers a draining fleet
SERVED_WHILE_DRAINING = (DirectiveKind.QUERY_RESOURCES, DirectiveKind.SYNC_STATE)

_TASK_STATE = {
    DirectiveResultStatus.COMPLETED: "TASK_STATE_COMPLETED",
    DirectiveResultStatus.FAILED: "TASK_STATE_FAILED",
    DirectiveResultStatus.CANCELLED: "TASK_STATE_CANCELED",
    DirectiveResultStatus.TIMED_OUT: "TASK_STATE_FAILED",
}


class Rejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(order=True)
class _Job:
    sort_key: tuple[int, int]
    directive: SwarmDirective = field(compare=False)
    handle: TaskHandle = field(compare=False)
    deadline_ms: int = field(compare=False)
    received_ms: int = field(compare=False)
    runner: asyncio.Task | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)
    cancel_reason: str = field(default="cancelled by the dispatcher", compare=False)
    recording: bool = field(default=False, compare=False)


class DirectiveHandler:
    """Implements the A2A server's handler protocol for this node."""

    def __init__(self, *, settings: NodeSettings, store: Store, clock: Clock, node_id: str,
                 agents: AgentRuntime, lifecycle: Callable[[], Lifecycle],
                 resources: Callable[[], dict[str, Any]], ops_reply: Callable[[str], Awaitable[str]],
                 extension_methods: Callable[[], dict[str, Callable[[dict], Awaitable[Any]]]] | None = None,
                 on_event: Callable[[str, dict], None] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.node_id = node_id
        self.agents = agents
        self.lifecycle = lifecycle
        self.resources = resources
        self.ops_reply = ops_reply
        self._extensions = extension_methods or (lambda: {})
        self._on_event = on_event or (lambda kind, data: None)
        self.store = store
        self.directives = DirectiveRepo(store)
        self.state = StateRepo(store)
        self.inbox = MessageRepo(store)
        self.hlc = HybridLogicalClock(clock)
        self.queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self.jobs: dict[str, _Job] = {}
        self.running = 0
        self._seq = itertools.count()
        self._workers: list[asyncio.Task] = []

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        # Work that was queued or running when the node died is not run again after a restart:
        # the dispatcher may have retried elsewhere, and "at most once" is the promise.
        now = self.clock.now_ms()
        for row in await self.directives.unfinished(INBOUND):
            await self.store.write(lambda conn, r=row: DirectiveRepo.finish(
                conn, r["directiveId"], INBOUND, DirectiveStatus.FAILED, None,
                "the node restarted before the directive finished", {}, now))
        self._workers = [asyncio.create_task(self._worker(), name=f"directive-worker-{i}")
                         for i in range(self.settings.max_workers)]

    async def stop(self, deadline_s: float) -> None:
        """Finish in-flight work within the deadline, cancel what remains, stop the workers."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while (self.running or not self.queue.empty()) and loop.time() < end:
            await asyncio.sleep(0.05)
        for job in list(self.jobs.values()):
            await self._cancel_job(job, "the node is shutting down")
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self.agents.shutdown(grace=2.0)

    async def cancel_all(self, why: str) -> int:
        """Cancel everything queued or running (the drain deadline); returns how many."""
        jobs = list(self.jobs.values())
        for job in jobs:
            await self._cancel_job(job, why)
        for job in jobs:
            await job.handle.wait_terminal(timeout=10)
        return len(jobs)

    def queue_figures(self) -> dict[str, int]:
        return {"queued": self.queue.qsize(), "running": self.running, "workers": self.settings.max_workers}

    # --- the A2A handler protocol ---------------------------------------------------------------
    async def handle_message(self, message: dict, params: dict, tasks: TaskStore) -> dict | TaskHandle:
        now = self.clock.now_ms()
        try:
            directive = message_to_directive(message, target_node_id=self.node_id, now_ms=now)
        except EnvelopeError as exc:
            raise InvalidParamsError(f"malformed directive: {exc}") from None
        if directive is None:
            text = " ".join(p["text"] for p in message.get("parts", []) if isinstance(p.get("text"), str))
            reply = await self.ops_reply(text)
            return make_message("ROLE_AGENT", [text_part(reply)], context_id=message.get("contextId"))
        return await self.submit(directive, tasks)

    async def submit(self, d: SwarmDirective, tasks: TaskStore) -> TaskHandle:
        existing = tasks.get(d.directive_id)
        if existing is not None:
            return existing  # a replay: the same task, never the work twice
        now = self.clock.now_ms()
        # no history: the directive is in its row, and echoing it back doubles every answer
        handle = tasks.create(task_id=d.directive_id, context_id=f"swarm.{d.directive_id}",
                              metadata={"swarmKind": d.kind.value, "swarmSourceNodeId": d.source_node_id})
        self._on_event("directive.received", {"directiveId": d.directive_id, "kind": d.kind.value})
        try:
            deadline = self._admit(d, now)
        except Rejected as exc:
            await self._record(d, handle, self._result(d, DirectiveResultStatus.FAILED, error=f"rejected: {exc.reason}: {exc}"),
                               rejected=exc.reason, first_write=True)
            return handle
        except _Expired:
            await self._record(d, handle, self._result(
                d, DirectiveResultStatus.TIMED_OUT, error="the directive's TTL had expired on arrival; it did not run"),
                first_write=True)
            return handle
        if d.kind is DirectiveKind.QUERY_RESOURCES:
            # a read: answered at once, outside the work queue, so an operator's view of a node
            # never waits behind the node's work; its row is written once, with the outcome
            await self._record(d, handle, self._result(d, DirectiveResultStatus.COMPLETED, output=self._resources()),
                               first_write=True)
            return handle
        if not await self.store.write(lambda conn: DirectiveRepo.insert(conn, d, DirectiveStatus.PENDING, INBOUND, now)):
            return await self._replayed(handle)
        job = _Job((-d.priority.rank, next(self._seq)), d, handle, deadline, now)
        self.jobs[d.directive_id] = job
        self.queue.put_nowait(job)
        return handle

    def _result(self, d: SwarmDirective, status: DirectiveResultStatus, *, output: Any = None,
                error: str | None = None) -> SwarmDirectiveResult:
        return SwarmDirectiveResult(d.directive_id, self.node_id, status, output=output, error=error,
                                    completed_at=format_ts(self.clock.now_ms()))

    def _resources(self) -> dict[str, Any]:
        doc = self.resources()
        doc["queue"] = self.queue_figures()
        return doc

    async def cancel_task(self, handle: TaskHandle) -> None:
        job = self.jobs.get(handle.task_id)
        if job is not None:
            await self._cancel_job(job, "cancelled by the dispatcher")
            # the worker records the outcome once the kind has cleaned up (agent or process group
            # killed); wait for it so the answer carries the result
            await handle.wait_terminal(timeout=10)

    async def load_task(self, task_id: str) -> dict | None:
        row = await self.directives.get(task_id, INBOUND)
        if row is None:
            return None
        return _task_from_row(row, self.node_id)

    def extension_methods(self) -> dict[str, Callable[[dict], Awaitable[Any]]]:
        return self._extensions()

    # --- admission ------------------------------------------------------------------------------
    def _admit(self, d: SwarmDirective, now: int) -> int:
        lifecycle = self.lifecycle()
        if lifecycle is Lifecycle.SEALED:
            raise Rejected("node_sealed", "the node is sealed and leaving the swarm")
        if lifecycle is Lifecycle.DRAINING and d.kind not in SERVED_WHILE_DRAINING:
            raise Rejected("node_draining", "the node is draining and takes no new work")
        tier = self.settings.tier
        if d.kind is DirectiveKind.EXECUTE_TASK:
            try:
                spec = parse_execute_payload(d.payload, self.settings.tools)
                check_execute(tier, self.settings.allowed_commands, spec)
            except NotPermitted as exc:
                raise Rejected("not_permitted", str(exc)) from None
            except ValueError:
                pass  # a bad payload fails when it runs, with the parser's message
        if d.kind is DirectiveKind.SPAWN_AGENT:
            agent_type = d.payload.get("agentType")
            kind = self.agents.types.get(agent_type) if isinstance(agent_type, str) else None
            if kind is not None:  # an unknown type fails when it runs, naming the known ones
                try:
                    check_spawn(tier, kind, {})
                except NotPermitted as exc:
                    raise Rejected("not_permitted", str(exc)) from None
        created = _ms_or(d.created_at, now)
        expires = _ms_or(d.expires_at, created + d.ttl_ms)
        if expires <= now:
            raise _Expired()
        # the receiver's own view of the TTL bounds the run too, whatever the sender's clock says
        return min(expires, now + d.ttl_ms)

    # --- running --------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            if job.cancelled:
                continue
            self.running += 1
            try:
                job.runner = asyncio.current_task()
                await self._run(job)
            except asyncio.CancelledError:
                if not job.cancelled:
                    raise
                await self._finish_cancelled(job)
                # a cancelled job leaves the worker alive for the next one
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
            finally:
                self.running -= 1
                self.jobs.pop(job.directive.directive_id, None)

    async def _run(self, job: _Job) -> None:
        d = job.directive
        job.handle.set_working()
        start = self.clock.monotonic()
        timeout = max(0.0, (job.deadline_ms - self.clock.now_ms()) / 1000)
        try:
            # the kinds enforce the TTL themselves and clean up (kill the process group); this outer
            # bound only catches a kind that would overrun it
            status, output, error, metrics = await asyncio.wait_for(self._execute(d, timeout), timeout + 5)
        except (asyncio.TimeoutError, TimeoutError):
            status, output, error, metrics = (DirectiveResultStatus.TIMED_OUT, None,
                                              f"the TTL of {d.ttl_ms} ms expired while it ran", DirectiveMetrics())
        except (ValueError, UnknownAgentType, ProcessStartError) as exc:
            status, output, error, metrics = DirectiveResultStatus.FAILED, None, str(exc), DirectiveMetrics()
        except NotPermitted as exc:
            status, output, error, metrics = DirectiveResultStatus.FAILED, None, f"not_permitted: {exc}", DirectiveMetrics()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one kind must not take the worker down
            log.exception("directive %s (%s) failed", d.directive_id, d.kind.value)
            status, output, error, metrics = DirectiveResultStatus.FAILED, None, f"internal error: {exc}", DirectiveMetrics()
        if not metrics.duration_ms:
            metrics.duration_ms = int((self.clock.monotonic() - start) * 1000)
        # from here the outcome is being stored: a cancel arriving now must not contradict it
        job.recording = True
        await asyncio.shield(self._record(d, job.handle, SwarmDirectiveResult(
            d.directive_id, self.node_id, status, output=output, error=error, metrics=metrics,
            completed_at=format_ts(self.clock.now_ms()))))

    async def _execute(self, d: SwarmDirective, timeout: float) -> tuple[DirectiveResultStatus, Any, str | None, DirectiveMetrics]:
        kind = d.kind
        if kind is DirectiveKind.EXECUTE_TASK:
            return await self._execute_task(d, timeout)
        if kind is DirectiveKind.SPAWN_AGENT:
            return await self._spawn_agent(d, timeout)
        if kind is DirectiveKind.FORWARD_MESSAGE:
            return await self._forward_message(d)
        return await self._sync_state(d)

    async def _execute_task(self, d: SwarmDirective, timeout: float):
        spec = parse_execute_payload(d.payload, self.settings.tools)
        check_execute(self.settings.tier, self.settings.allowed_commands, spec)
        out = await run_command(spec, timeout=timeout, clock=self.clock)
        output = {"exitCode": out.exit_code, "stdout": out.stdout, "stderr": out.stderr,
                  "stdoutTruncated": out.stdout_truncated, "stderrTruncated": out.stderr_truncated,
                  "durationMs": out.duration_ms}
        metrics = DirectiveMetrics(duration_ms=out.duration_ms)
        if out.timed_out:
            return DirectiveResultStatus.TIMED_OUT, output, f"killed at the TTL of {d.ttl_ms} ms", metrics
        if out.exit_code != 0:
            return DirectiveResultStatus.FAILED, output, f"exit code {out.exit_code}", metrics
        return DirectiveResultStatus.COMPLETED, output, None, metrics

    async def _spawn_agent(self, d: SwarmDirective, timeout: float):
        p = d.payload
        agent_type, instruction = p.get("agentType"), p.get("instruction", "")
        if not isinstance(agent_type, str) or not agent_type:
            raise ValueError("spawn_agent needs payload.agentType, a string naming a configured agent type")
        if not isinstance(instruction, str):
            raise ValueError("payload.instruction must be a string")
        session_id, env, detach = p.get("sessionId"), p.get("env") or {}, p.get("detach", False)
        if session_id is not None and not isinstance(session_id, str):
            raise ValueError("payload.sessionId must be a string")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("payload.env must be an object of string values")
        if not isinstance(detach, bool):
            raise ValueError("payload.detach must be true or false")
        agent = await self.agents.spawn(agent_type, instruction, session_id=session_id, env=env, detach=detach)
        ident = {"pid": agent.pid, "osPid": agent.os_pid, "agentId": agent.agent_id, "sessionId": agent.session_id,
                 "agentType": agent.agent_type, "nodeId": self.node_id}
        await self._deliver_queued(agent)
        if detach:
            return DirectiveResultStatus.COMPLETED, {**ident, "detached": True}, None, DirectiveMetrics()
        try:
            outcome = await agent.wait(timeout)
        except (asyncio.TimeoutError, TimeoutError):
            await agent.terminate()
            raise
        except asyncio.CancelledError:
            await agent.terminate()
            raise
        m = outcome.metrics
        metrics = DirectiveMetrics(tokens_in=m.tokens_in, tokens_out=m.tokens_out, cost_usd=m.cost_usd,
                                   tool_calls=m.tool_calls, duration_ms=m.duration_ms)
        output = {**ident, "exitCode": outcome.exit_code, "output": outcome.output, "truncated": outcome.truncated,
                  "status": outcome.status, "cpuMs": round(m.cpu_ms, 1), "peakMemoryMb": round(m.peak_memory_mb, 1)}
        if outcome.status != "exited" or outcome.exit_code != 0:
            tail = outcome.stderr.strip().splitlines()[-1:] if outcome.stderr else []
            why = f": {tail[0][:300]}" if tail else ""
            return (DirectiveResultStatus.FAILED, output,
                    f"agent {outcome.status} with exit code {outcome.exit_code}{why}", metrics)
        return DirectiveResultStatus.COMPLETED, output, None, metrics

    async def _deliver_queued(self, agent: Any) -> None:
        for msg in await self.inbox.queued_for(agent.session_id, agent.agent_id):
            if await agent.send_message(msg["message"]):
                now = self.clock.now_ms()
                await self.store.write(lambda conn, m=msg: MessageRepo.mark_delivered(conn, m["id"], now))

    async def _forward_message(self, d: SwarmDirective):
        p = d.payload
        session_id, agent_id, message = p.get("targetSessionId"), p.get("agentId"), p.get("message")
        if not session_id and not agent_id:
            raise ValueError("forward_message needs payload.targetSessionId or payload.agentId")
        for name, value in (("targetSessionId", session_id), ("agentId", agent_id)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"payload.{name} must be a string")
        if message is None:
            raise ValueError("forward_message needs payload.message (any JSON value)")
        targets = self.agents.find_by_agent_id(agent_id) if agent_id else None
        candidates = [targets] if targets else (self.agents.find_by_session(session_id) if session_id else [])
        delivered_to = []
        for agent in candidates:
            if agent is not None and await agent.send_message({"from": d.source_node_id, "message": message}):
                delivered_to.append(agent.pid)
        now = self.clock.now_ms()
        msg_id = await self.store.write(lambda conn: MessageRepo.add(
            conn, directive_id=d.directive_id, session_id=session_id, agent_id=agent_id,
            source_node_id=d.source_node_id, message=message, delivered=bool(delivered_to), now_ms=now))
        result = {"messageId": msg_id, "status": "delivered" if delivered_to else "queued", "deliveredTo": delivered_to}
        return DirectiveResultStatus.COMPLETED, result, None, DirectiveMetrics()

    async def _sync_state(self, d: SwarmDirective):
        p = d.payload
        namespace = p.get("namespace")
        if namespace not in STATE_NAMESPACES:
            raise ValueError(f"payload.namespace must be one of {', '.join(STATE_NAMESPACES)}; got {namespace!r}")
        incoming = parse_state_entries(p.get("entries") or {}, namespace)
        digest = p.get("digest") or {}
        if not isinstance(digest, dict):
            raise ValueError("payload.digest must be an object of key -> {hlc, origin}")
        applied = await self.merge_state(namespace, incoming)
        # send back everything the sender does not have in a newer or equal version
        ours = await self.state.all(namespace)
        theirs = {k: _version(v) for k, v in digest.items()}
        for entry in incoming:
            theirs[entry.key] = max(theirs.get(entry.key, (-1, "")), entry.version)
        back = {k: e.to_wire() for k, e in ours.items() if e.version > theirs.get(k, (-1, ""))}
        return DirectiveResultStatus.COMPLETED, {"namespace": namespace, "applied": applied, "entries": back}, None, DirectiveMetrics()

    async def merge_state(self, namespace: str, entries: list[StateEntry]) -> int:
        for entry in entries:
            self.hlc.observe(entry.hlc)
        now = self.clock.now_ms()
        return await self.store.write(
            lambda conn: sum(StateRepo.put_if_newer(conn, namespace, e, now) for e in entries))

    async def put_state(self, namespace: str, key: str, value: Any) -> StateEntry:
        check_state_key(namespace, key)
        entry = StateEntry(key, value, self.hlc.now(), self.node_id)
        await self.merge_state(namespace, [entry])
        return entry

    # --- results --------------------------------------------------------------------------------
    async def _record(self, d: SwarmDirective, handle: TaskHandle, result: SwarmDirectiveResult,
                      rejected: str | None = None, first_write: bool = False) -> None:
        """The one place a directive's terminal state is written: row first, then the task.
        ``first_write``: the directive has no row yet (rejected, expired, or answered at once); if
        one exists after all, this is a replay from before a restart and its stored outcome wins."""
        now = self.clock.now_ms()
        status, metrics = DirectiveStatus(result.status.value), to_wire(result.metrics)
        if first_write:
            written = await self.store.write(lambda conn: DirectiveRepo.insert(
                conn, d, status, INBOUND, now, result.output, result.error, metrics))
            if not written:
                await self._replayed(handle)
                return
        else:
            await self.store.write(lambda conn: DirectiveRepo.finish(
                conn, d.directive_id, INBOUND, status, result.output, result.error, metrics, now))
        handle.add_artifact([data_part(to_wire(result))], name=RESULT_ARTIFACT)
        if rejected:
            handle.finish("TASK_STATE_REJECTED", text=result.error, data={"reason": rejected})
        else:
            handle.finish(_TASK_STATE[result.status], text=result.error)
        self._on_event("directive.finished", {"directiveId": d.directive_id, "status": result.status.value,
                                              "role": INBOUND})

    async def _cancel_job(self, job: _Job, why: str) -> None:
        if job.cancelled or job.recording:  # too late: the result is being stored and wins
            return
        job.cancelled = True
        job.cancel_reason = why
        if job.runner is not None and not job.runner.done():
            job.runner.cancel()  # the worker records the cancellation when the kind has cleaned up
        else:
            self.jobs.pop(job.directive.directive_id, None)
            await self._finish_cancelled(job, why)

    async def _finish_cancelled(self, job: _Job, why: str | None = None) -> None:
        why = why or job.cancel_reason
        await self._record(job.directive, job.handle, SwarmDirectiveResult(
            job.directive.directive_id, self.node_id, DirectiveResultStatus.CANCELLED, error=why,
            completed_at=format_ts(self.clock.now_ms())))

    async def _replayed(self, handle: TaskHandle) -> TaskHandle:
        """A replay of a directive this node recorded before a restart: the task answers with the
        stored outcome (or as still working), and the work never runs again."""
        row = await self.directives.get(handle.task_id, INBOUND)
        task = _task_from_row(row, self.node_id) if row else {"status": {"state": "TASK_STATE_FAILED"}}
        for artifact in task.get("artifacts", []):
            handle.add_artifact(artifact["parts"], name=artifact.get("name"))
        if task["status"]["state"] != "TASK_STATE_WORKING":
            handle.finish(task["status"]["state"], text=row.get("error") if row else "lost record")
        return handle


class _Expired(Exception):
    pass


def _ms_or(text: str | None, default: int) -> int:
    """A directive's timestamp (already checked by the envelope parser)."""
    return parse_ts(text) if text else default


def _version(v: Any) -> tuple[int, str]:
    if not isinstance(v, dict) or not isinstance(v.get("hlc"), int) or not isinstance(v.get("origin"), str):
        raise ValueError("each digest version must be {hlc: integer, origin: string}")
    return (v["hlc"], v["origin"])


def check_state_key(namespace: str, key: str) -> None:
    if namespace not in STATE_NAMESPACES:
        raise ValueError(f"namespace must be one of {', '.join(STATE_NAMESPACES)}; got {namespace!r}")
    if not key or len(key) > 256:
        raise ValueError("a state key must be 1 to 256 characters")
    if namespace == "config" and any(w in key.lower().replace("-", "_") for w in SECRET_WORDS):
        raise ValueError(f"the config namespace never carries secrets; key {key!r} looks like one")


def parse_state_entries(entries: Any, namespace: str) -> list[StateEntry]:
    if not isinstance(entries, dict):
        raise ValueError("payload.entries must be an object of key -> {value, version: {hlc, origin}}")
    out = []
    for key, item in entries.items():
        check_state_key(namespace, key)
        if not isinstance(item, dict) or "value" not in item:
            raise ValueError(f"entries[{key!r}] must be {{value, version: {{hlc, origin}}}}")
        hlc, origin = _version(item.get("version"))
        out.append(StateEntry(key, item["value"], hlc, origin))
    return out


def _task_from_row(row: dict[str, Any], node_id: str) -> dict[str, Any]:
    status = row["status"]
    state = {"completed": "TASK_STATE_COMPLETED", "failed": "TASK_STATE_FAILED", "cancelled": "TASK_STATE_CANCELED",
             "timed_out": "TASK_STATE_FAILED"}.get(status, "TASK_STATE_FAILED")
    if status in ("pending", "dispatched"):
        state = "TASK_STATE_WORKING"
    task: dict[str, Any] = {
        "id": row["directiveId"], "contextId": f"swarm.{row['directiveId']}",
        "status": {"state": state, "timestamp": row["updatedAt"]},
    }
    if status not in ("pending", "dispatched"):
        result = {"directiveId": row["directiveId"], "nodeId": node_id, "status": status, "output": row["output"],
                  "error": row["error"], "completedAt": row["completedAt"],
                  "metrics": {"tokensIn": row["tokensIn"], "tokensOut": row["tokensOut"], "costUsd": row["costUsd"],
                              "durationMs": row["durationMs"], "toolCalls": row["toolCalls"]}}
        task["artifacts"] = [{"artifactId": f"{row['directiveId']}.result", "name": RESULT_ARTIFACT,
                              "parts": [data_part(result)]}]
    return task
