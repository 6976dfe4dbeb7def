"""The local OsKernel's process table and resource accounting.

Local processes get kernel PIDs from 1 (the node daemon itself is PID 1); PIDs at or above
REMOTE_PID_BASE belong to remote processes (swarm/remote_kernel.py) and never come from here.
Counters are cumulative for the life of the daemon: a restart is a counter reset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cortex_node.clock import Clock
from cortex_node.contracts import REMOTE_PID_BASE, ProcessInfo, ProcessStatus, Usage, format_ts, utc_midnight_ms

EXITED_KEPT = 200  # finished processes stay visible in the tree for a while


@dataclass
class OsKernel:
    node_id: str
    clock: Clock
    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    totals: Usage = field(default_factory=Usage)
    today: Usage = field(default_factory=Usage)  # since UTC midnight (tokens, cost, tool calls)
    _today_start_ms: int = 0
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
            pid=pid, parent_pid=parent_pid, name=name, role=role, status=ProcessStatus.RUNNING, node_id=self.node_id,
            agent_id=agent_id, session_id=session_id, agent_type=agent_type, os_pid=os_pid,
            started_at=format_ts(self.clock.now_ms()),
        )
        self.processes[pid] = proc
        return proc

    def add_usage(self, pid: int, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0,
                  tool_calls: int = 0) -> None:
        used = Usage(tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd, tool_calls=tool_calls)
        for account in (self.processes[pid].resources, self.totals, self._today()):
            account.add(used)

    def set_process_sample(self, pid: int, cpu_ms: float, memory_mb: float) -> None:
        """psutil figures of a live process: cpu is cumulative, memory feeds the peak."""
        r = self.processes[pid].resources
        if cpu_ms > r.cpu_ms:
            self.totals.cpu_ms += cpu_ms - r.cpu_ms
            r.cpu_ms = cpu_ms
        r.peak_memory_mb = max(r.peak_memory_mb, memory_mb)
        self.totals.peak_memory_mb = max(self.totals.peak_memory_mb, memory_mb)

    def finish(self, pid: int, status: ProcessStatus, exit_code: int | None) -> None:
        proc = self.processes[pid]
        proc.status = ProcessStatus(status)
        proc.exit_code = exit_code
        proc.exited_at = format_ts(self.clock.now_ms())
        finished = [p for p in self.processes.values() if p.status.finished]
        for old in finished[: max(0, len(finished) - EXITED_KEPT)]:
            del self.processes[old.pid]

    def _today(self) -> Usage:
        day = utc_midnight_ms(self.clock.now_ms())
        if self._today_start_ms != day:
            self._today_start_ms, self.today = day, Usage()
        return self.today

    def usage_today(self) -> Usage:
        return self._today().usage()

    def active_processes(self) -> int:
        return sum(1 for p in self.processes.values() if p.status == ProcessStatus.RUNNING)

    def active_sessions(self) -> int:
        return len({p.session_id for p in self.processes.values()
                    if p.status == ProcessStatus.RUNNING and p.session_id})

    def counters(self) -> Usage:
        return self.totals.usage()

    def list(self) -> list[ProcessInfo]:
        return sorted(self.processes.values(), key=lambda p: p.pid)
