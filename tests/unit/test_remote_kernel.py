"""Remote PIDs: stable per (node, pid), replaced not added, never colliding with local PIDs."""

from __future__ import annotations

from cortex_node.clock import ManualClock
from cortex_node.contracts import REMOTE_PID_BASE, ProcessInfo, Usage
from cortex_node.kernel.process_table import OsKernel
from cortex_node.swarm.remote_kernel import RemoteKernel


def proc(pid: int, tokens: int = 0, status: str = "running", parent: int | None = None) -> ProcessInfo:
    return ProcessInfo(pid=pid, parent_pid=parent, name="sim", role="agent", status=status, node_id="remote",
                       agent_type="sim", resources=Usage(tokens_in=tokens))


def test_repeated_syncs_keep_pids_and_replace_figures() -> None:
    rk = RemoteKernel(ManualClock())
    assert rk.sync_remote_resources("node_b", [proc(2, 10), proc(3, 5, parent=2)]) == [REMOTE_PID_BASE, REMOTE_PID_BASE + 1]
    for tokens in (20, 30):
        assert rk.sync_remote_resources("node_b", [proc(2, tokens), proc(3, 5, parent=2)]) == []
    procs = {p.remote_pid: p for p in rk.list()}
    assert procs[2].pid == REMOTE_PID_BASE and procs[2].resources.tokens_in == 30  # replaced, not 60
    assert procs[3].parent_pid == REMOTE_PID_BASE  # the remote parent is mapped to its local PID
    # the same remote pid on another node is another process
    rk.sync_remote_resources("node_c", [proc(2)])
    assert len({p.pid for p in rk.list()}) == 3


def test_vanished_processes_exit_and_silent_nodes_go_unknown() -> None:
    rk = RemoteKernel(ManualClock())
    rk.sync_remote_resources("node_b", [proc(2), proc(3)])
    rk.sync_remote_resources("node_b", [proc(2)])
    by_remote = {p.remote_pid: p for p in rk.list()}
    assert by_remote[3].status == "exited" and by_remote[2].status == "running"
    assert rk.count_for("node_b") == 1
    rk.mark_node_unknown("node_b")
    assert {p.remote_pid: p.status for p in rk.list()} == {2: "unknown", 3: "exited"}
    assert rk.unregister_remote_process("node_b", 2) and not rk.unregister_remote_process("node_b", 2)


def test_remote_and_local_pids_never_collide() -> None:
    clock = ManualClock()
    kernel = OsKernel(node_id="node_a", clock=clock)
    rk = RemoteKernel(clock)
    local = {kernel.register("a", role="agent").pid for _ in range(50)} | {1}
    remote = {rk.register_remote_process("node_b", proc(i)).pid for i in range(50)}
    assert not local & remote and min(remote) >= REMOTE_PID_BASE > max(local)
    # the placement given at registration (under the dispatcher) survives later syncs
    p = rk.register_remote_process("node_b", proc(100), parent_pid=1)
    rk.sync_remote_resources("node_b", [proc(100, 7)])
    assert rk.processes[p.pid].parent_pid == 1 and rk.processes[p.pid].resources.tokens_in == 7
