"""execute_task: payload validation and running real commands as process groups."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_node.clock import ManualClock, SystemClock
from cortex_node.kernel.commands import (
    CommandSpec,
    ProcessStartError,
    fill_placeholders,
    parse_execute_payload,
    run_command,
)

CLOCK = SystemClock()
TOOLS = {
    "git-status": {"argv": ["git", "-C", "{repo}", "status", "--short"]},
    "say": {"argv": [sys.executable, "-c", "import sys; print(sys.argv[1:])", "{first}", "--to={second}"]},
    "broken": {"args": ["x"]},
}


async def eventually(predicate, timeout: float = 2.0) -> None:
    """Wait for a condition another process brings about."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def run(payload: dict, timeout: float = 5.0, **kwargs):
    return await run_command(parse_execute_payload(payload, TOOLS), timeout=timeout, clock=CLOCK, **kwargs)


# --- parse_execute_payload ------------------------------------------------------------------------
def test_argv_list_is_taken_as_is():
    spec = parse_execute_payload({"command": ["ls", "-l", "a b"], "cwd": "/tmp", "env": {"A": "1"}, "stdin": "x"}, {})
    assert spec == CommandSpec(argv=("ls", "-l", "a b"), cwd="/tmp", env={"A": "1"}, stdin="x")
    assert not spec.shell


def test_string_command_is_split_not_given_to_a_shell():
    spec = parse_execute_payload({"command": "grep -n 'a b' file.txt; rm -rf /"}, {})
    assert spec.argv == ("grep", "-n", "a b", "file.txt;", "rm", "-rf", "/")
    assert spec.shell_script is None


def test_shell_true_keeps_the_string_as_a_script():
    spec = parse_execute_payload({"command": "echo $HOME | wc -c", "shell": True}, {})
    assert spec.shell and spec.shell_script == "echo $HOME | wc -c" and spec.argv == ()


def test_tool_placeholders_are_filled_from_args():
    spec = parse_execute_payload({"tool": "git-status", "args": {"repo": "/srv/my repo"}}, TOOLS)
    assert spec.argv == ("git", "-C", "/srv/my repo", "status", "--short")
    assert spec.tool == "git-status"
    spec = parse_execute_payload({"tool": "say", "args": {"first": 7, "second": "{first}"}}, TOOLS)
    assert spec.argv[-2:] == ("7", "--to={first}")  # a value is never expanded itself


@pytest.mark.parametrize("payload, message", [
    ("ls", "payload must be an object, got str"),
    ({"command": "ls", "timeout": 5}, "unknown execute_task key(s) timeout; allowed: command, shell"),
    ({}, "exactly one of command (an argv list or a string) and tool (a name from settings.tools); got neither"),
    ({"command": "ls", "tool": "say"}, "got both"),
    ({"command": 42}, "command must be an argv list of strings or a string, got int"),
    ({"command": []}, "command is empty"),
    ({"command": "   "}, "command is empty"),
    ({"command": ["", "x"]}, "command is empty"),
    ({"command": ["ls", 3]}, "command[1] must be a string, got int"),
    ({"command": ["ls", "a\0b"]}, "command[1] contains a NUL"),
    ({"command": "echo 'unclosed"}, "cannot be split into arguments: No closing quotation"),
    ({"command": "ls", "shell": "yes"}, "shell must be true or false, got 'yes'"),
    ({"command": ["ls"], "shell": True}, "with shell: true, command must be one non-empty string"),
    ({"command": "ls", "cwd": 5}, "cwd must be a non-empty directory path, got 5"),
    ({"command": "ls", "cwd": ""}, "cwd must be a non-empty directory path"),
    ({"command": "ls", "env": ["A=1"]}, "env must be an object of string values, got list"),
    ({"command": "ls", "env": {"A": 1}}, "env.A must be a string"),
    ({"command": "ls", "env": {"A=B": "1"}}, "env name 'A=B' is not valid"),
    ({"command": "ls", "stdin": 3}, "stdin must be a string, got int"),
    ({"command": "ls", "args": {}}, "args goes with tool"),
    ({"tool": "nope"}, "unknown tool 'nope'; tools on this node: broken, git-status, say"),
    ({"tool": 3}, "unknown tool 3"),
    ({"tool": "git-status"}, "tool 'git-status' needs argument(s) repo; it takes: repo"),
    ({"tool": "git-status", "args": {"repo": ".", "branch": "x"}},
     "tool 'git-status' has no argument 'branch'; it takes: repo"),
    ({"tool": "git-status", "args": {"repo": ["."]}}, "args.repo must be a string or a number, got ['.']"),
    ({"tool": "git-status", "args": {"repo": True}}, "args.repo must be a string or a number"),
    ({"tool": "git-status", "args": "repo=."}, "args must be an object, got str"),
    ({"tool": "git-status", "args": {"repo": "."}, "shell": True}, "shell applies to command, not to tool"),
    ({"tool": "broken"}, "settings.tools.broken must be an object with \"argv\""),
])
def test_payload_errors_say_what_is_wrong(payload, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_execute_payload(payload, TOOLS)


def test_unknown_tool_when_none_are_configured():
    with pytest.raises(ValueError, match="tools on this node: none are configured"):
        parse_execute_payload({"tool": "x"}, {})


ARG = st.text().filter(lambda s: "\0" not in s)


@given(st.lists(ARG, max_size=5), ARG.filter(bool))
def test_a_joined_argv_splits_back_to_itself(args, program):
    argv = [program, *args]
    assert parse_execute_payload({"command": shlex.join(argv)}, {}).argv == tuple(argv)


@given(st.text(), st.text())
def test_placeholder_values_are_inserted_verbatim(first, second):
    assert fill_placeholders("a{x}b{y}c", {"x": first, "y": second}) == f"a{first}b{second}c"


# --- run_command ----------------------------------------------------------------------------------
async def test_exit_zero_with_output():
    outcome = await run({"command": ["sh", "-c", "echo hello; echo warn >&2"]})
    assert (outcome.exit_code, outcome.stdout, outcome.stderr, outcome.timed_out) == (0, "hello\n", "warn\n", False)
    assert not outcome.stdout_truncated and not outcome.stderr_truncated
    assert 0 <= outcome.duration_ms < 2000


async def test_non_zero_exit_code():
    outcome = await run({"command": "sh -c 'echo failing >&2; exit 3'"})
    assert outcome.exit_code == 3 and outcome.stderr == "failing\n" and not outcome.timed_out


async def test_stdin_cwd_and_env_reach_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_SWARM_TOKEN", "s3cret")
    code = ("import os, sys; "
            "print(sys.stdin.read(), os.getcwd(), os.environ['GREETING'], 'CORTEX_SWARM_TOKEN' in os.environ)")
    outcome = await run({"command": [sys.executable, "-c", code], "stdin": "piped", "cwd": str(tmp_path),
                         "env": {"GREETING": "hi"}})
    assert outcome.stdout == f"piped {tmp_path} hi False\n"  # the swarm token stays with the daemon


async def test_output_is_capped_and_flagged():
    code = "import sys; sys.stdout.write('x' * 200_000); sys.stderr.write('e' * 10)"
    outcome = await run({"command": [sys.executable, "-c", code]}, output_limit=1000)
    assert outcome.exit_code == 0  # the process was never blocked on a full pipe
    assert outcome.stdout == "x" * 1000 and outcome.stdout_truncated
    assert outcome.stderr == "e" * 10 and not outcome.stderr_truncated


async def test_timeout_kills_the_whole_process_group_quickly():
    outcome = await run({"command": ["sh", "-c", "sleep 30 & echo $!; wait"]}, timeout=0.5)
    assert outcome.timed_out and outcome.exit_code < 0
    assert outcome.duration_ms < 2000
    await eventually(lambda: gone(int(outcome.stdout)))


async def test_a_plain_sleep_times_out():
    outcome = await run({"command": "sleep 30"}, timeout=0.2)
    assert outcome.timed_out and outcome.duration_ms < 1500


async def test_the_timeout_runs_on_the_injected_clock():
    clock = ManualClock()
    task = asyncio.create_task(run_command(parse_execute_payload({"command": "sleep 30"}, {}), timeout=60, clock=clock))
    while not task.done():  # a minute of TTL passes in no time: advance until the run gives up
        clock.advance(61)
        await asyncio.sleep(0.01)
    outcome = task.result()
    assert outcome.timed_out and outcome.duration_ms >= 60_000


async def test_what_a_command_leaves_behind_is_stopped_when_it_exits():
    # the background sleep holds stdout open: without stopping the group this would run 30 s
    outcome = await run({"command": ["sh", "-c", "sleep 30 & echo $!"]}, timeout=10)
    assert outcome.exit_code == 0 and not outcome.timed_out and outcome.duration_ms < 2000
    await eventually(lambda: gone(int(outcome.stdout)))


async def test_cancelling_the_run_kills_the_group(tmp_path):
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(run({"command": ["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"]}, timeout=30))
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: gone(int(pid_file.read_text())))


async def test_shell_script_runs_through_sh_when_asked():
    outcome = await run({"command": "echo $((1 + 2)) | sed s/3/three/", "shell": True})
    assert outcome.stdout == "three\n"


async def test_tool_runs_its_filled_argv():
    outcome = await run({"tool": "say", "args": {"first": "a b", "second": "c"}})
    assert outcome.stdout == "['a b', '--to=c']\n"


async def test_missing_program_is_a_clear_start_error():
    with pytest.raises(ProcessStartError, match="cannot start 'no-such-program-cortex': No such file or directory"):
        await run({"command": "no-such-program-cortex --help"})


async def test_missing_cwd_is_a_clear_start_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ProcessStartError, match=f"cannot run in cwd '{missing}': No such file or directory"):
        await run({"command": "ls", "cwd": missing})
