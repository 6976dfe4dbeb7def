"""Work must not outlive its node: child records, PR_SET_PDEATHSIG, and ending orphans at start.

Orphans are made for real: process groups started here in their own sessions, with the tag a node
would give them, and a record that names a daemon which is no longer running (a short process that
has exited) - what a kill -9 of the node leaves in its data directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cortex_node.clock import SystemClock
from cortex_node.kernel.children import (
    TAG_ENV,
    ChildRecord,
    ChildTracker,
    boot_id,
    process_start,
    reap_orphans,
)
from cortex_node.kernel.commands import COMMAND_PDEATHSIG, parse_execute_payload, run_command
from tests.support.nodes import REPO

LINUX = sys.platform.startswith("linux")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not all(gone(p) for p in pids):
        assert time.monotonic() < end, f"still running: {[p for p in pids if not gone(p)]}"
        time.sleep(0.02)


@pytest.fixture
def dead_daemon() -> tuple[int, str]:
    """The pid and start time of a 'daemon' that has exited (as after kill -9)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(proc.pid)  # readable until it is reaped
    proc.wait()
    return proc.pid, start


@pytest.fixture
def started():
    """Processes a test starts; each is killed and reaped at the end, whatever happened."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait(5)


def start_group(started, code: str, tag: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if tag:
        env[TAG_ENV] = tag
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env,
                            stdout=subprocess.PIPE, text=True)
    started.append(proc)
    return proc


def write_record(state: Path, proc_pid: int, daemon: tuple[int, str], tag: str, *, start: str | None = ...,
                 boot: str | None = None, what: str = "execute_task dir_x: work") -> Path:
    rec = ChildRecord(pid=proc_pid, pgid=proc_pid, start=process_start(proc_pid) if start is ... else start,
                      boot_id=boot or boot_id(), tag=tag, what=what, node_pid=daemon[0], node_start=daemon[1],
                      recorded_at=time.time())
    state.mkdir(exist_ok=True)
    path = state / f"child-{proc_pid}-{tag[:12]}.json"
    path.write_text(json.dumps(rec.to_doc()))
    return path


# a leader that starts a grandchild (in its group, with its environment) and prints its pid
FORKS = ("import subprocess, sys, time; g = subprocess.Popen(['sleep', '30']); print(g.pid, flush=True); "
         "time.sleep(30)")
LEAVES = "import subprocess; g = subprocess.Popen(['sleep', '30']); print(g.pid, flush=True)"  # and exits


async def test_a_live_leader_and_its_group_are_ended(tmp_path, dead_daemon, started):
    tag = "a" * 32
    leader = start_group(started, FORKS, tag)
    grandchild = int(leader.stdout.readline())
    record = write_record(tmp_path, leader.pid, dead_daemon, tag)
    lines = await reap_orphans(tmp_path, grace=2.0)
    assert len(lines) == 1 and lines[0].startswith("ended execute_task dir_x: work: left running by the previous "
                                                   f"run of this node (pid {dead_daemon[0]}); 2 process(es)")
    assert "(SIGTERM)" in lines[0] and str(grandchild) in lines[0]
    wait_gone([leader.pid, grandchild], timeout=2)
    assert not record.exists()
    assert await reap_orphans(tmp_path) == []  # nothing twice


async def test_what_outlived_its_leader_is_found_by_its_tag(tmp_path, dead_daemon, started):
    tag = "b" * 32
    leader = start_group(started, LEAVES, tag)
    straggler = int(leader.stdout.readline())
    leader.wait(5)  # the leader is gone; its child lives on in the group (what PDEATHSIG leaves behind)
    assert not gone(straggler)
    write_record(tmp_path, leader.pid, dead_daemon, tag, start="1")  # the leader's start no longer matches
    lines = await reap_orphans(tmp_path)
    assert len(lines) == 1 and f"os pid(s) {straggler}" in lines[0]
    wait_gone([straggler], timeout=2)


async def test_an_unrelated_process_with_a_recorded_pid_is_left_alone(tmp_path, dead_daemon, started):
    # pid reuse: the record names a pid that now belongs to another process (other start time, no tag)
    other = start_group(started, "import time; time.sleep(30)", tag=None)
    path = write_record(tmp_path, other.pid, dead_daemon, "c" * 32, start="12345")
    assert await reap_orphans(tmp_path) == []
    assert not gone(other.pid) and not path.exists()


async def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(tmp_path, dead_daemon, started):
    tag = "d" * 32
    stubborn = start_group(started, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                    "print('ready', flush=True); time.sleep(30)", tag)
    assert stubborn.stdout.readline().strip() == "ready"
    write_record(tmp_path, stubborn.pid, dead_daemon, tag)
    began = time.monotonic()
    (line,) = await reap_orphans(tmp_path, grace=0.3)
    assert "(SIGTERM, then SIGKILL after 0.3 s)" in line and time.monotonic() - began < 3
    assert stubborn.wait(5) == -signal.SIGKILL


async def test_records_of_a_running_daemon_or_another_boot_are_not_orphans(tmp_path, started):
    tag = "e" * 32
    mine = start_group(started, "import time; time.sleep(30)", tag)
    me = (os.getpid(), process_start(os.getpid()))
    kept = write_record(tmp_path, mine.pid, me, tag)  # this very process's child: alive and looked after
    old_boot = write_record(tmp_path, mine.pid, (999_999, "1"), "f" * 32, boot="another-boot")
    (tmp_path / "child-1-broken.json").write_text("{not json")
    cut = tmp_path / "child-2-cut.tmp"
    cut.write_text("{")
    os.utime(cut, (time.time() - 3600, time.time() - 3600))  # cut off by a crash long ago
    (tmp_path / "child-3-writing.tmp").write_text("{")  # being written by a live daemon right now
    assert await reap_orphans(tmp_path) == []
    assert not gone(mine.pid) and kept.exists()
    assert not old_boot.exists() and {p.name for p in tmp_path.iterdir()} == {kept.name, "child-3-writing.tmp"}


async def test_no_directory_no_tracking():
    assert await reap_orphans(None) == []
    assert await reap_orphans(Path("/nonexistent/cortex-children")) == []
    tracker = ChildTracker(None)
    assert not tracker.enabled and tracker.new_tag() is None and tracker.add(1, None, "x") is None


# --- the record while a command runs ----------------------------------------------------------------
async def test_a_tracked_command_is_recorded_while_it_runs_and_carries_its_tag(tmp_path):
    state = tmp_path / "children"
    tracker = ChildTracker(state)
    spec = parse_execute_payload({"command": [sys.executable, "-c",
                                              "import os, time; print(os.environ['CORTEX_CHILD_TAG']); "
                                              "time.sleep(0.5)"]}, {})
    task = asyncio.create_task(run_command(spec, timeout=10, clock=SystemClock(), children=tracker,
                                           what="execute_task dir_y: python"))
    while not list(state.glob("*.json")):
        await asyncio.sleep(0.01)
    (doc,) = [json.loads(p.read_text()) for p in state.glob("*.json")]
    assert doc["what"] == "execute_task dir_y: python" and doc["nodePid"] == os.getpid()
    assert doc["start"] == process_start(doc["pid"]) and doc["bootId"] == boot_id()
    outcome = await task
    assert outcome.stdout.strip() == doc["tag"]
    assert list(state.iterdir()) == []


async def test_a_record_that_cannot_be_written_does_not_stop_the_work(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    tracker = ChildTracker(blocker / "children")  # under a regular file: mkdir fails, even for root
    outcome = await run_command(parse_execute_payload({"command": ["echo", "ran"]}, {}), timeout=5,
                                clock=SystemClock(), children=tracker)
    assert outcome.exit_code == 0 and outcome.stdout == "ran\n"
    assert "cannot record child processes" in caplog.text


# --- PR_SET_PDEATHSIG -----------------------------------------------------------------------------
DAEMON = """
import asyncio, sys
from cortex_node.kernel.commands import ChildProcess

async def main():
    child = await ChildProcess.start(["sleep", "30"], cwd=None, env={"PATH": "/usr/bin:/bin"},
                                     on_stdout=lambda b: None, on_stderr=lambda b: None, with_stdin=False,
                                     pdeathsig=True)
    print(child.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux only")
def test_a_childs_leader_ends_when_its_daemon_is_killed():
    """Agents ask for it (kernel/agents.py); commands do not by default (COMMAND_PDEATHSIG: it costs
    a fork of the daemon per start), they are ended by the next start from their record."""
    assert COMMAND_PDEATHSIG is False
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        child = int(daemon.stdout.readline())
        assert not gone(child)
        daemon.kill()  # kill -9: the daemon runs no code of its own any more
        daemon.wait(5)
        wait_gone([child], timeout=3)
    finally:
        daemon.kill()
        daemon.wait(5)
        try:
            os.killpg(child, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
