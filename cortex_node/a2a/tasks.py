"""Live A2A tasks: a bounded in-memory store of ``TaskHandle``s.

The embedder's handler creates a task here and drives it (``set_working``, ``add_artifact``,
``finish``); the server reads it for GetTask/ListTasks/CancelTask and streams its events to
SSE subscribers. A task reaches exactly one terminal state; later updates are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cortex_node.a2a.wire import (
    ROLE_AGENT,
    TASK_STATE_SUBMITTED,
    TASK_STATE_WORKING,
    TERMINAL_STATES,
    apply_history_length,
    data_part,
    make_message,
    text_part,
)
from cortex_node.clock import Clock
from cortex_node.contracts import format_ts

log = logging.getLogger("cortex.a2a")

DEFAULT_MAX_TASKS = 5000

_PAGE_TOKEN = re.compile(r"(\d+)\.(\d+)")


class TaskHandle:
    """One task. Only the store creates handles (``TaskStore.create``)."""

    def __init__(self, store: TaskStore, seq: int, task_id: str, context_id: str,
                 metadata: dict[str, Any] | None, history: list[dict[str, Any]]) -> None:
        self._store = store
        self._seq = seq  # creation order, breaks ties between equal timestamps
        self.task_id = task_id
        self.context_id = context_id
        self.metadata = dict(metadata or {})
        self.created_ms = store.clock.now_ms()
        self.status_ms = self.created_ms  # time of the last status change: ListTasks sorts and filters by it
        self._status: dict[str, Any] = {"state": TASK_STATE_SUBMITTED, "timestamp": format_ts(self.created_ms)}
        self._history = [{**m, "taskId": task_id, "contextId": context_id} for m in history]
        self._artifacts: list[dict[str, Any]] = []
        self._subscribers: list[TaskSubscription] = []
        self._terminal = asyncio.Event()
        # Set by the server when a client asks to cancel; long-running work may watch it.
        self.cancel_requested = asyncio.Event()

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r}, {self.state})"

    @property
    def state(self) -> str:
        return self._status["state"]

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_proto(self, history_length: int | None = None, include_artifacts: bool = True) -> dict[str, Any]:
        """The ProtoJSON Task. Empty lists and maps are left out, as protobuf's MessageToDict does."""
        task: dict[str, Any] = {"id": self.task_id, "contextId": self.context_id, "status": dict(self._status)}
        if include_artifacts and self._artifacts:
            task["artifacts"] = list(self._artifacts)
        if self._history:
            task["history"] = list(self._history)
        if self.metadata:
            task["metadata"] = dict(self.metadata)
        return apply_history_length(task, history_length)

    def set_working(self, text: str | None = None) -> bool:
        """Move to WORKING, optionally with an agent status message. False once terminal."""
        if self.is_terminal:
            return False
        self._set_status(TASK_STATE_WORKING, [text_part(text)] if text is not None else [])
        return True

    def add_artifact(self, parts: list[dict[str, Any]], name: str | None = None,
                     artifact_id: str | None = None) -> bool:
        """Attach an output. False once terminal: a finished task's artifacts are final."""
        if not parts:
            raise ValueError("an artifact needs at least one part")
        if self.is_terminal:
            return False
        artifact: dict[str, Any] = {"artifactId": artifact_id or str(uuid.uuid4()), "parts": list(parts)}
        if name:
            artifact["name"] = name
        self._artifacts.append(artifact)
        self._publish({"artifactUpdate": {"taskId": self.task_id, "contextId": self.context_id,
                                          "artifact": artifact}})
        return True

    def finish(self, state: str, text: str | None = None, data: Any = None) -> bool:
        """Enter a terminal state (COMPLETED, FAILED, CANCELED or REJECTED), optionally with an
        agent status message of a text and/or a data part. Only the first call counts: it returns
        True, any later one False."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish() needs a terminal state, one of {', '.join(sorted(TERMINAL_STATES))}; "
                             f"got {state!r}")
        if self.is_terminal:
            return False
        parts = ([text_part(text)] if text is not None else []) + ([data_part(data)] if data is not None else [])
        self._set_status(state, parts)
        return True

    async def wait_terminal(self, timeout: float | None = None) -> bool:
        """Wait until the task is terminal; False if ``timeout`` seconds (event-loop time) pass first."""
        if self._terminal.is_set():  # most directives answered inline are done before anyone waits
            return True
        try:
            await asyncio.wait_for(self._terminal.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def subscribe(self) -> TaskSubscription:
        """Events from this moment on. Registration is immediate, so a snapshot taken right after
        (``to_proto``) plus the subscription's events miss nothing."""
        return TaskSubscription(self)

    def _set_status(self, state: str, parts: list[dict[str, Any]]) -> None:
        self.status_ms = self._store.clock.now_ms()
        status: dict[str, Any] = {"state": state, "timestamp": format_ts(self.status_ms)}
        if parts:
            status["message"] = make_message(ROLE_AGENT, parts, task_id=self.task_id, context_id=self.context_id)
        self._status = status
        self._publish({"statusUpdate": {"taskId": self.task_id, "contextId": self.context_id,
                                        "status": dict(status)}})
        if state in TERMINAL_STATES:
            self._terminal.set()
            for subscriber in self._subscribers:
                subscriber._end()
            self._subscribers.clear()
            self._store._on_terminal(self)

    def _publish(self, event: dict[str, Any]) -> None:
        for subscriber in self._subscribers:
            subscriber._push(event)


class TaskSubscription:
    """Async iterator of StreamResponse dicts (``{"statusUpdate": …}`` / ``{"artifactUpdate": …}``)
    for one task; it ends after the terminal status. ``close()`` it when leaving early."""

    def __init__(self, handle: TaskHandle) -> None:
        self._handle = handle
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None marks the end
        self._ended = False
        if handle.is_terminal:
            self._end()
        else:
            handle._subscribers.append(self)

    def __aiter__(self) -> TaskSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._ended:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._ended = True
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        if self in self._handle._subscribers:
            self._handle._subscribers.remove(self)
        self._ended = True

    def _push(self, event: dict[str, Any]) -> None:
        self._queue.put_nowait(event)

    def _end(self) -> None:
        self._queue.put_nowait(None)


@dataclass
class TaskPage:
    tasks: list[TaskHandle]
    next_page_token: str  # "" on the last page
    total_size: int  # matching tasks across all pages


class TaskStore:
    """At most ``max_tasks`` handles. When full, the task that became terminal longest ago is
    dropped first; only if none is terminal does the oldest live task go (its holder keeps driving
    it, but it can no longer be looked up here)."""

    def __init__(self, clock: Clock, max_tasks: int = DEFAULT_MAX_TASKS) -> None:
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1; got {max_tasks}")
        self.clock = clock
        self.max_tasks = max_tasks
        self._tasks: dict[str, TaskHandle] = {}  # insertion order = creation order
        # order of reaching a terminal state; an OrderedDict pops its oldest in O(1), a plain dict
        # used as a queue slows down as deleted slots pile up at its front
        self._terminal_ids: OrderedDict[str, None] = OrderedDict()
        self._next_seq = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def create(self, task_id: str | None = None, context_id: str | None = None,
               metadata: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None) -> TaskHandle:
        """A new SUBMITTED task; ids default to fresh uuids. ``history`` messages are stored with
        this task's taskId and contextId. Raises ValueError if ``task_id`` is already here."""
        task_id = task_id or str(uuid.uuid4())
        if task_id in self._tasks:
            raise ValueError(f"task {task_id!r} already exists")
        while len(self._tasks) >= self.max_tasks:
            self._evict_one()
        self._next_seq += 1
        handle = TaskHandle(self, self._next_seq, task_id, context_id or str(uuid.uuid4()), metadata,
                            list(history or []))
        self._tasks[task_id] = handle
        return handle

    def get(self, task_id: str) -> TaskHandle | None:
        return self._tasks.get(task_id)

    def list(self, context_id: str | None = None, state: str | None = None, page_size: int = 50,
             page_token: str | None = None, status_after_ms: int | None = None) -> TaskPage:
        """Tasks, latest status change first, filtered, one page at a time. The page token is the position
        of the last task returned, so it stays valid while tasks come and go. Raises ValueError for
        a page token this store did not issue."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1; got {page_size}")
        matching = [h for h in self._tasks.values()
                    if (context_id is None or h.context_id == context_id)
                    and (state is None or h.state == state)
                    and (status_after_ms is None or h.status_ms >= status_after_ms)]
        matching.sort(key=_sort_key, reverse=True)
        start = 0
        if page_token:
            found = _PAGE_TOKEN.fullmatch(page_token)
            if not found:
                raise ValueError(f"page token {page_token!r} was not issued by this store")
            after = (int(found.group(1)), int(found.group(2)))
            start = next((i for i, h in enumerate(matching) if _sort_key(h) < after), len(matching))
        page = matching[start:start + page_size]
        more = start + page_size < len(matching)
        next_token = f"{page[-1].status_ms}.{page[-1]._seq}" if more else ""
        return TaskPage(tasks=page, next_page_token=next_token, total_size=len(matching))

    def _on_terminal(self, handle: TaskHandle) -> None:
        if self._tasks.get(handle.task_id) is handle:
            self._terminal_ids[handle.task_id] = None

    def _evict_one(self) -> None:
        if self._terminal_ids:
            victim, _ = self._terminal_ids.popitem(last=False)  # O(1); a plain dict degrades when used as a queue
        else:
            victim = next(iter(self._tasks))
            log.warning("task store full (%d tasks, none finished): dropping live task %s",
                        self.max_tasks, victim)
        del self._tasks[victim]


def _sort_key(handle: TaskHandle) -> tuple[int, int]:
    return handle.status_ms, handle._seq
