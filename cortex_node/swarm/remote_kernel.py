"""Remote processes in the local process tree.

A process running on node B appears here under one stable local PID >= REMOTE_PID_BASE for as
long as it lives: the key is (B, B's pid). A sync replaces the figures it carries (it never adds
them twice) and never allocates a new PID for a process already known. PIDs come from their own
range, so they never collide with the local kernel's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

from cortex_node.clock import Clock
from cortex_node.contracts import REMOTE_PID_BASE, ProcessInfo, ProcessStatus, WireError, format_ts, from_wire

FINISHED_KEPT_PER_NODE = 100


class RemoteKernel:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._next_pid = REMOTE_PID_BASE
        self._pid_of: dict[tuple[str, int], int] = {}
        self._pids_by_node: dict[str, set[int]] = {}  # so a node's sync never scans the others
        self.processes: dict[int, ProcessInfo] = {}

    def register_remote_process(self, node_id: str, info: ProcessInfo, parent_pid: int | None = None) -> ProcessInfo:
        """Add or update one remote process; ``info.pid`` is its pid on ``node_id``."""
        key = (node_id, info.pid)
        pid = self._pid_of.get(key)
        if pid is None:
            pid = self._next_pid
            self._next_pid += 1
            self._pid_of[key] = pid
            self._pids_by_node.setdefault(node_id, set()).add(pid)
        previous = self.processes.get(pid)
        proc = replace(
            info, pid=pid, remote_pid=info.pid, node_id=node_id,
            parent_pid=self._map_parent(node_id, info.parent_pid, parent_pid, previous),
            resources=replace(info.resources),
        )
        self.processes[pid] = proc
        return proc

    def _map_parent(self, node_id: str, remote_parent: int | None, given: int | None,
                    previous: ProcessInfo | None) -> int | None:
        if given is not None:
            return given
        if previous is not None and previous.parent_pid is not None:
            return previous.parent_pid  # the first placement (e.g. under the dispatcher) stays
        if remote_parent is not None:
            return self._pid_of.get((node_id, remote_parent))
        return None

    def unregister_remote_process(self, node_id: str, remote_pid: int) -> bool:
        pid = self._pid_of.pop((node_id, remote_pid), None)
        if pid is None:
            return False
        self.processes.pop(pid, None)
        self._pids_by_node[node_id].discard(pid)
        return True

    def sync_remote_resources(self, node_id: str, processes: Iterable[ProcessInfo]) -> list[int]:
        """Make ``node_id``'s subtree what its heartbeat says: new processes appear, known ones get
        the reported status and figures (replaced, not added), ones no longer reported have
        exited. Returns the local PIDs of processes that appeared."""
        seen: set[int] = set()
        appeared: list[int] = []
        for info in processes:
            known = (node_id, info.pid) in self._pid_of
            proc = self.register_remote_process(node_id, info)
            seen.add(proc.pid)
            if not known:
                appeared.append(proc.pid)
        now = format_ts(self.clock.now_ms())
        for pid in self.pids_of(node_id):
            proc = self.processes[pid]
            if pid not in seen and not proc.status.finished:
                proc.status, proc.exited_at = ProcessStatus.EXITED, proc.exited_at or now
        self._trim(node_id)
        return appeared

    def mark_node_unknown(self, node_id: str) -> None:
        """The node went silent: what it ran is no longer known to be running."""
        for pid in self.pids_of(node_id):
            proc = self.processes[pid]
            if not proc.status.finished:
                proc.status = ProcessStatus.UNKNOWN

    def forget_node(self, node_id: str) -> None:
        """The node was forgotten: its subtree leaves the tree."""
        for pid in self.pids_of(node_id):
            self.unregister_remote_process(node_id, self.processes[pid].remote_pid)
        self._pids_by_node.pop(node_id, None)

    def pids_of(self, node_id: str) -> list[int]:
        return sorted(self._pids_by_node.get(node_id, ()))

    def count_for(self, node_id: str) -> int:
        return sum(1 for pid in self.pids_of(node_id) if not self.processes[pid].status.finished)

    def list(self) -> list[ProcessInfo]:
        return sorted(self.processes.values(), key=lambda p: p.pid)

    def _trim(self, node_id: str) -> None:
        finished = [pid for pid in self.pids_of(node_id) if self.processes[pid].status.finished]
        for pid in finished[: max(0, len(finished) - FINISHED_KEPT_PER_NODE)]:
            self.unregister_remote_process(node_id, self.processes[pid].remote_pid)


def processes_from_wire(items: Any) -> list[ProcessInfo]:
    """A heartbeat's process list; raises ValueError naming the bad entry."""
    if not isinstance(items, list):
        raise ValueError("processes must be a list")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(from_wire(ProcessInfo, item, f"processes[{i}]"))
        except WireError as exc:
            raise ValueError(str(exc)) from None
    return out

