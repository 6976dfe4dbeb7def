"""The local OsKernel's process table and resource accounting.

Local processes get kernel PIDs from 1 (the node daemon itself is PID 1); PIDs at or above
REMOTE_PID_BASE belong to remote processes (swarm/remote_kernel.py) and never come from here.
Counters are cumulative for the life of the daemon: a restart is a counter reset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from cortex_node.clock import Clock
from cortex_node.contracts import REMOTE_PID_BASE, ProcessInfo, ResourceCounters, format_ts, utc_midnight_ms

RUNNING = "running"
FINISHED_STATES = ("exited", "failed", "killed")
EXITED_KEPT = 200  # finished processes stay visible in the tree for a while


@dataclass
class UsageToday:
    day_start_ms: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


@dataclass
class OsKernel:
    node_id: str
    clock: Clock
    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    totals: ResourceCounters = field(default_factory=ResourceCounters)
    today: UsageToday = field(default_factory=UsageToday)
    _next_pid: int = 1

    def __post_init__(self) -> None:
        self.register("cortex-node", role="node", os_pid=os.getpid())

    def register(self, name: str, *, role: str, parent_pid: int | None = None, agent_id: str | None = None,
                 session_id: str | None = None, agent_type: str | None = None, os_pid: int | None = None) -> ProcessInfo:
        if self._next_pid >= REMOTE_PID_BASE:
            raise RuntimeError("local PID space exhausted")
        pid = self._next_pid
        self._next_pid += 1
        proc = ProcessInfo(
            pid=pid, parent_pid=parent_pid, name=name, role=role, status=RUNNING, node_id=self.node_id,
            agent_id=agent_id, session_id=session_id, agent_type=agent_type, os_pid=os_pid,
            started_at=format_ts(self.clock.now_ms()),
        )
        self.processes[pid] = proc
        return proc

    def add_usage(self, pid: int, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0,
                  tool_calls: int = 0) -> None:
        proc = self.processes[pid]
        r = proc.resources
        r.tokens_in += tokens_in
        r.tokens_out += tokens_out
        r.cost_usd += cost_usd
        r.tool_calls += tool_calls
        t = self.totals
        t.tokens_in += tokens_in
        t.tokens_out += tokens_out
        t.cost_usd += cost_usd
        t.tool_calls += tool_calls
        today = self._today()
        today.tokens_in += tokens_in
        today.tokens_out += tokens_out
        today.cost_usd += cost_usd

    def set_process_sample(self, pid: int, cpu_ms: float, memory_mb: float) -> None:
        """psutil figures of a live process: cpu is cumulative, memory feeds the peak."""
        r = self.processes[pid].resources
        if cpu_ms > r.cpu_ms:
            self.totals.cpu_ms += cpu_ms - r.cpu_ms
            r.cpu_ms = cpu_ms
        r.peak_memory_mb = max(r.peak_memory_mb, memory_mb)
        self.totals.peak_memory_mb = max(self.totals.peak_memory_mb, memory_mb)

    def finish(self, pid: int, status: str, exit_code: int | None) -> None:
        proc = self.processes[pid]
        proc.status = status
        proc.exit_code = exit_code
        proc.exited_at = format_ts(self.clock.now_ms())
        finished = [p for p in self.processes.values() if p.status in FINISHED_STATES]
        for old in finished[: max(0, len(finished) - EXITED_KEPT)]:
            del self.processes[old.pid]

    def _today(self) -> UsageToday:
        day = utc_midnight_ms(self.clock.now_ms())
        if self.today.day_start_ms != day:
            self.today = UsageToday(day_start_ms=day)
        return self.today

    def usage_today(self) -> UsageToday:
        return self._today()

    def active_processes(self) -> int:
        return sum(1 for p in self.processes.values() if p.status == RUNNING)

    def active_sessions(self) -> int:
        return len({p.session_id for p in self.processes.values() if p.status == RUNNING and p.session_id})

    def counters(self) -> ResourceCounters:
        return replace(self.totals)

    def list(self) -> list[ProcessInfo]:
        return sorted(self.processes.values(), key=lambda p: p.pid)
