"""Work must not outlive its node: a kill -9 of cortex-node used to leave its commands and agents
running (each leads its own session), while the restarted node recorded them as failed.

The work here is a leader that starts a grandchild and then waits, both with a unique word in their
command lines: an ``execute_task`` and a detached agent. The agent's leader ends with the node
(PR_SET_PDEATHSIG, Linux); the command and both grandchildren, which no death signal reaches, are
still running after the kill (the bug), and the restarted node ends them from the records in its
data directory.

NEEDS WIRING: ``test_work_left_running_by_a_kill_9_is_ended_when_the_node_restarts`` and
``test_the_records_go_away_with_the_work`` run only once the coordinator passes ``state_dir`` to
AgentRuntime and calls ``reap_orphans`` in ``Coordinator.start`` (see the hardening issue's
report); until then they are skipped with that reason. The two short sleeps are not waits: they
give what must go on running the time to show it does. Every process a test starts is killed at its end (the ``marker`` fixture runs ``kill_strays``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest

from cortex_node.swarm import coordinator as coordinator_module
from tests.reliability.conftest import FAST
from tests.reliability.helpers import Node
from tests.support.nodes import wait_for

LINUX = sys.platform.startswith("linux")
CHILDREN_DIR = "children"
WIRED = hasattr(coordinator_module, "reap_orphans")
needs_wiring = pytest.mark.skipif(
    not WIRED, reason="NEEDS WIRING: AgentRuntime(state_dir=data_dir/'children') and reap_orphans() in "
                      "Coordinator.start (cortex_node/swarm/coordinator.py)")

# argv[1] is a word unique to the test and the role; the grandchild carries it with "-grandchild"
LEADER = ("import subprocess, sys, time; "
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1] + '-grandchild']); "
          "time.sleep(60)")


def processes(word: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if word in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def with_arg(marker: str, arg: str) -> list[psutil.Process]:
    """The live processes with ``arg`` as one whole argv element (a leader's code mentions
    '-grandchild' too, so substrings will not do)."""
    found = []
    for proc in processes(marker):
        try:
            if arg in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def leaders(marker: str, role: str | None = None) -> list[psutil.Process]:
    return [p for r in ((role,) if role else ("task", "agent")) for p in with_arg(marker, f"{marker}-{r}")]


def grandchildren(marker: str) -> list[psutil.Process]:
    return [p for r in ("task", "agent") for p in with_arg(marker, f"{marker}-{r}-grandchild")]


def start_work(nodes, tmp_path: Path, marker: str, name: str) -> tuple[Node, str, str]:
    """A node running an execute_task and a detached agent, each a leader with a grandchild."""
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps({"swarm": {"agents": {
        "lingering": {"argv": [sys.executable, "-c", LEADER, f"{marker}-agent"]}}}}))
    node = nodes(name, *FAST, "--config", str(cfg))
    status, doc = node.post("/api/swarm/directives", {
        "targetNodeId": node.node_id, "kind": "execute_task", "ttlMs": 60_000, "wait": False,
        "payload": {"command": [sys.executable, "-c", LEADER, f"{marker}-task"]}})
    assert status == 202, doc
    task_id = doc["directiveId"]
    status, doc = node.post("/api/swarm/directives", {
        "targetNodeId": node.node_id, "kind": "spawn_agent", "ttlMs": 20_000,
        "payload": {"agentType": "lingering", "instruction": "linger", "detach": True}})
    assert status == 200 and doc["status"] == "completed", doc
    wait_for(lambda: len(processes(marker)) == 4, timeout=10, what="two leaders and two grandchildren")
    return node, task_id, doc["output"]["agentId"]


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux only")
def test_an_agent_ends_with_its_node_and_what_it_started_does_not(nodes, tmp_path: Path, marker: str) -> None:
    node, _, _ = start_work(nodes, tmp_path, marker, "pdeathsig")
    node.kill()
    wait_for(lambda: not leaders(marker, "agent"), timeout=5, what="the agent to end with its node")
    # the bug a restart has to mend: the command (no death signal by default: it would cost a fork of
    # the daemon per start) and what each leader started are still running, for good
    time.sleep(0.5)
    assert len(leaders(marker, "task")) == 1 and len(grandchildren(marker)) == 2


@needs_wiring
def test_work_left_running_by_a_kill_9_is_ended_when_the_node_restarts(nodes, tmp_path: Path, marker: str) -> None:
    node, task_id, agent_id = start_work(nodes, tmp_path, marker, "orphans")
    records = list((node.data_dir / CHILDREN_DIR).glob("*.json"))
    assert len(records) == 2, records  # one per live child: the command and the agent
    survivors = [p for p in processes(marker) if p not in leaders(marker, "agent")] if LINUX else processes(marker)
    node.kill()
    if LINUX:  # the agent's leader ends with the node (PR_SET_PDEATHSIG); nothing else does
        wait_for(lambda: not leaders(marker, "agent"), timeout=5, what="the agent to end with its node")
    time.sleep(0.5)
    assert all(p.is_running() for p in survivors), "the bug: they go on after the node died"
    assert len(processes(marker)) == len(survivors)

    started = time.monotonic()
    node.start()
    wait_for(lambda: not processes(marker), timeout=5, what="the restarted node to end the orphans")
    assert time.monotonic() - started < 10
    log = node.log_text()
    assert f"ended execute_task {task_id}" in log and f"ended agent {agent_id} (lingering)" in log, node.log_tail()
    details = [e["detail"] for e in node.events_about(node.node_id)]
    assert any(d.startswith(f"ended execute_task {task_id}: ") for d in details), details
    assert any(d.startswith(f"ended agent {agent_id} (lingering) in session ") for d in details), details
    assert list((node.data_dir / CHILDREN_DIR).glob("*.json")) == []
    # the directive it was running is recorded as ended, once
    (row,) = node.directive_rows(task_id, "inbound")
    assert row["status"] == "failed" and "restarted" in row["error"], row


@needs_wiring
def test_the_records_go_away_with_the_work(nodes, tmp_path: Path, marker: str) -> None:
    """Only a crash leaves records behind: a command that ends and an agent ended by the seal do not."""
    cfg = tmp_path / "tidy.json"
    cfg.write_text(json.dumps({"swarm": {"agents": {
        "lingering": {"argv": [sys.executable, "-c", LEADER, f"{marker}-agent"]}}}}))
    node = nodes("tidy", *FAST, "--config", str(cfg))
    records = node.data_dir / CHILDREN_DIR
    status, doc = node.post("/api/swarm/directives", {
        "targetNodeId": node.node_id, "kind": "execute_task", "ttlMs": 20_000,
        "payload": {"command": [sys.executable, "-c", "print('done')", marker]}})
    assert status == 200 and doc["status"] == "completed", doc
    assert list(records.glob("*.json")) == []
    status, doc = node.post("/api/swarm/directives", {
        "targetNodeId": node.node_id, "kind": "spawn_agent", "ttlMs": 20_000,
        "payload": {"agentType": "lingering", "instruction": "linger", "detach": True}})
    assert status == 200 and doc["status"] == "completed", doc
    wait_for(lambda: len(processes(marker)) == 2, timeout=10, what="the agent and its grandchild")
    assert len(list(records.glob("*.json"))) == 1
    node.stop()  # SIGTERM = seal: the agent's group is terminated
    assert node.wait_exit(15) == 0
    wait_for(lambda: not processes(marker), timeout=5, what="the agent's group to end with the seal")
    assert list(records.glob("*.json")) == []
