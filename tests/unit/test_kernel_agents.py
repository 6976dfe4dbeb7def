"""The agent runtime with real agent processes: spawn, usage, messages, terminate, limits."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_node.clock import SystemClock
from cortex_node.contracts import NodeTier, to_wire
from cortex_node.kernel.agents import (
    MAX_AGENTS,
    AgentLimitReached,
    AgentRuntime,
    AgentStdout,
    UnknownAgentType,
    load_agent_types,
    parse_usage_line,
)
from cortex_node.kernel.commands import ProcessStartError
from cortex_node.kernel.policy import NotPermitted
from cortex_node.kernel.process_table import OsKernel
from cortex_node.kernel.sim_agent import simulate

PY = sys.executable
FAST_SIM = {"CORTEX_SIM_SECONDS": "0.3"}


def script(code: str, *args: str, unprivileged: bool = False) -> dict:
    """An agent type running a Python snippet (its argv may hold {instruction})."""
    return {"argv": [PY, "-c", code, *args], "unprivileged": unprivileged}


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


@pytest.fixture
def kernel() -> OsKernel:
    return OsKernel(node_id="node_test_kernel", clock=SystemClock())


@pytest.fixture
async def make_runtime(kernel):
    made: list[AgentRuntime] = []

    def make(agents: dict | None = None, *, tier: NodeTier = NodeTier.ROOT, **options) -> AgentRuntime:
        runtime = AgentRuntime(kernel, kernel.clock, agents or {}, tier=tier, **options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:  # nothing a test started outlives it
        await runtime.shutdown(grace=0.2)


# --- the built-ins end to end ---------------------------------------------------------------------
async def test_sim_agent_runs_registered_and_reports_synthetic_usage(kernel, make_runtime):
    runtime = make_runtime()
    agent = await runtime.spawn("sim", "summarise the logs", env=FAST_SIM)
    info = kernel.processes[agent.pid]
    assert (info.role, info.agent_type, info.parent_pid, info.status) == ("agent", "sim", 1, "running")
    assert info.os_pid == agent.os_pid and psutil.pid_exists(agent.os_pid)
    assert info.agent_id == agent.agent_id and agent.agent_id.startswith("agent_")
    assert info.session_id == agent.session_id and agent.session_id.startswith("sess_")
    assert runtime.find_by_agent_id(agent.agent_id) is agent

    outcome = await agent.wait(timeout=5)
    expected = simulate("summarise the logs", steps=4, seed=0)
    tokens_in, tokens_out = sum(u["tokensIn"] for u in expected), sum(u["tokensOut"] for u in expected)
    assert (outcome.status, outcome.exit_code, outcome.truncated) == ("exited", 0, False)
    assert outcome.output == (f"sim: answered 'summarise the logs' in 4 steps, {tokens_in + tokens_out} "
                              "tokens (synthetic)\n")
    m = outcome.metrics
    assert (m.tokens_in, m.tokens_out) == (tokens_in, tokens_out)
    assert m.cost_usd == pytest.approx(sum(u["costUsd"] for u in expected))
    assert m.tool_calls == sum(u["toolCalls"] for u in expected)
    assert m.duration_ms >= 300 and m.cpu_ms > 0 and m.peak_memory_mb > 1
    assert set(to_wire(outcome)["metrics"]) == {"tokensIn", "tokensOut", "costUsd", "toolCalls", "durationMs",
                                                 "cpuMs", "peakMemoryMb"}

    assert (info.status, info.exit_code) == ("exited", 0) and info.exited_at is not None
    assert info.resources.tokens_in == tokens_in and kernel.totals.tokens_in == tokens_in
    assert info.resources.cpu_ms == pytest.approx(m.cpu_ms, abs=0.1)
    assert runtime.running() == [] and runtime.find_by_agent_id(agent.agent_id) is None


async def test_sim_figures_depend_only_on_instruction_and_seed():
    assert simulate("a", steps=3, seed=1) == simulate("a", steps=3, seed=1)
    assert simulate("a", steps=3, seed=1) != simulate("a", steps=3, seed=2)
    assert simulate("a", steps=3, seed=1) != simulate("b", steps=3, seed=1)


async def test_echo_agent_answers_its_instruction_from_stdin_and_exits(kernel, make_runtime):
    runtime = make_runtime()
    agent = await runtime.spawn("echo", "hello\nworld", session_id="sess_given")
    assert agent.session_id == "sess_given" and runtime.find_by_session("sess_given") == [agent]
    outcome = await agent.wait(timeout=5)
    assert (outcome.status, outcome.output) == ("exited", "echo: hello world\n")  # one line on stdin
    assert kernel.processes[agent.pid].session_id == "sess_given"


async def test_instruction_goes_into_argv_where_the_template_says_else_to_stdin(make_runtime):
    show = "import sys; print(sys.argv[1:], repr(sys.stdin.read()))"
    runtime = make_runtime({"in-argv": script(show, "--task={instruction}", "x"), "on-stdin": script(show)})
    tricky = "--help; $(touch /tmp/never) 'quoted'"
    outcome = await (await runtime.spawn("in-argv", tricky)).wait(timeout=5)
    assert outcome.output == f"{['--task=' + tricky, 'x']} ''\n"  # one argv element, no stdin
    outcome = await (await runtime.spawn("on-stdin", tricky)).wait(timeout=5)
    assert outcome.output == f"[] {tricky + chr(10)!r}\n"


async def test_send_message_reaches_a_detached_echo_agent(make_runtime):
    runtime = make_runtime()
    agent = await runtime.spawn("echo", "hi", detach=True)
    assert await agent.send_message({"text": "ping", "n": 1})
    assert await agent.send_message({"text": "ünïcode"})
    agent.end_input()
    outcome = await agent.wait(timeout=5)
    assert outcome.output == 'echo: hi\necho: {"n": 1, "text": "ping"}\necho: {"text": "ünïcode"}\n'
    assert not await agent.send_message({"text": "too late"})


async def test_an_attached_agent_takes_no_messages(make_runtime):
    agent = await make_runtime().spawn("echo", "hi")
    assert not await agent.send_message({"text": "x"})  # its stdin closed after the instruction
    assert (await agent.wait(timeout=5)).status == "exited"


async def test_wait_timeout_leaves_the_agent_running_and_sampled(kernel, make_runtime):
    agent = await make_runtime().spawn("echo", "hi", detach=True)
    with pytest.raises(asyncio.TimeoutError):
        await agent.wait(timeout=0.1)
    assert agent.running and not gone(agent.os_pid)
    resources = kernel.processes[agent.pid].resources
    await eventually(lambda: resources.peak_memory_mb > 1 and resources.cpu_ms > 0)  # psutil, while it runs
    agent.end_input()
    assert (await agent.wait(timeout=5)).exit_code == 0


# --- usage lines and output -----------------------------------------------------------------------
USAGE_SCRIPT = """
import json
print("before")
print(json.dumps({"cortex": "usage", "tokensIn": 10, "tokensOut": 5, "costUsd": 0.25, "toolCalls": 2}))
print('{"cortex": "note", "tokensIn": 99}')
print(json.dumps({"cortex": "usage", "tokensIn": 1, "tokensOut": -4}))
print("after")
"""


async def test_usage_lines_add_to_the_counters_and_are_not_output(kernel, make_runtime):
    agent = await make_runtime({"counting": script(USAGE_SCRIPT)}).spawn("counting", "go")
    outcome = await agent.wait(timeout=5)
    assert outcome.output == 'before\n{"cortex": "note", "tokensIn": 99}\nafter\n'
    m = outcome.metrics
    assert (m.tokens_in, m.tokens_out, m.cost_usd, m.tool_calls) == (11, 5, 0.25, 2)  # the negative is ignored
    r = kernel.processes[agent.pid].resources
    assert (r.tokens_in, r.tokens_out, r.cost_usd, r.tool_calls) == (11, 5, 0.25, 2)


async def test_output_is_capped_with_a_marker_and_usage_still_counts(make_runtime):
    code = ("import json\nfor i in range(50): print('x' * 99)\n"
            "print(json.dumps({'cortex': 'usage', 'tokensIn': 7}))")
    runtime = make_runtime({"chatty": script(code)}, output_limit=1000)
    outcome = await (await runtime.spawn("chatty", "go")).wait(timeout=5)
    assert outcome.truncated
    assert outcome.output == ("x" * 99 + "\n") * 10 + "\n[output truncated by cortex-node: 4000 more bytes]\n"
    assert outcome.metrics.tokens_in == 7


def test_usage_line_parsing():
    assert parse_usage_line(b'{"cortex": "usage", "tokensIn": 3, "costUsd": 0.5}\n') == {
        "tokens_in": 3, "tokens_out": 0, "cost_usd": 0.5, "tool_calls": 0}
    assert parse_usage_line(b"plain output\n") is None
    assert parse_usage_line(b'{"cortex": "usage"\n') is None  # not JSON: output
    assert parse_usage_line(b'["cortex", "usage"]\n') is None
    assert parse_usage_line(b'{"cortex": "usage", "tokensIn": "many", "toolCalls": true}') == {
        "tokens_out": 0, "cost_usd": 0.0}


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_stdout_is_split_the_same_whatever_the_pipe_chunks(cuts):
    stream = b'out 1\n{"cortex": "usage", "tokensIn": 4}\n' + b"y" * 70 + b'\n{"cortex": "usage", "tokensIn": 1}\ntail'
    counted: list[dict] = []
    sink = AgentStdout(limit=10_000, on_usage=counted.append)
    position = 0
    for size in cuts:
        sink.feed(stream[position:position + size])
        position += size
    sink.feed(stream[position:])
    sink.close()
    assert sink.text() == "out 1\n" + "y" * 70 + "\ntail"
    assert [u["tokens_in"] for u in counted] == [4, 1]


# --- failing, terminating -------------------------------------------------------------------------
async def test_a_non_zero_exit_is_failed_with_its_stderr(kernel, make_runtime):
    code = "import sys; print('partial'); sys.exit('boom: no API key')"
    agent = await make_runtime({"broken": script(code)}).spawn("broken", "go")
    outcome = await agent.wait(timeout=5)
    assert (outcome.status, outcome.exit_code, outcome.output) == ("failed", 1, "partial\n")
    assert outcome.stderr == "boom: no API key\n"
    assert (kernel.processes[agent.pid].status, kernel.processes[agent.pid].exit_code) == ("failed", 1)


FORKING_SCRIPT = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"


async def test_terminate_kills_the_agent_and_its_process_group(kernel, make_runtime):
    runtime = make_runtime({"forking": script(FORKING_SCRIPT)})
    agent = await runtime.spawn("forking", "go")
    await eventually(lambda: psutil.Process(agent.os_pid).children())
    child = psutil.Process(agent.os_pid).children()[0].pid

    outcome = await agent.terminate(grace=1.0)
    assert (outcome.status, outcome.exit_code) == ("killed", -15)
    assert outcome.metrics.duration_ms < 2000
    assert kernel.processes[agent.pid].status == "killed"
    await eventually(lambda: gone(agent.os_pid) and gone(child))
    assert runtime.running() == []


async def test_terminate_escalates_to_sigkill_after_the_grace(make_runtime, tmp_path):
    ready = tmp_path / "ready"
    code = (f"import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"pathlib.Path({str(ready)!r}).touch(); time.sleep(30)")
    agent = await make_runtime({"stubborn": script(code)}).spawn("stubborn", "go")
    await eventually(ready.exists)
    outcome = await agent.terminate(grace=0.3)
    assert (outcome.status, outcome.exit_code) == ("killed", -9)
    assert gone(agent.os_pid)


async def test_shutdown_terminates_every_agent(make_runtime):
    runtime = make_runtime()
    agents = [await runtime.spawn("echo", f"n{i}", detach=True, session_id="sess_shared") for i in range(2)]
    assert runtime.find_by_session("sess_shared") == agents
    await runtime.shutdown(grace=1.0)
    assert [(await a.wait(timeout=1)).status for a in agents] == ["killed", "killed"]
    assert runtime.running() == [] and all(gone(a.os_pid) for a in agents)


# --- environment, types, refusals -----------------------------------------------------------------
async def test_agent_environment_names_it_and_hides_the_swarm_token(make_runtime, monkeypatch):
    monkeypatch.setenv("CORTEX_SWARM_TOKEN", "s3cret")
    code = ("import os; print(*(os.environ.get(k) for k in ('CORTEX_NODE_ID', 'CORTEX_AGENT_ID', "
            "'CORTEX_SESSION_ID', 'CORTEX_KERNEL_PID', 'FROM_TYPE', 'FROM_DIRECTIVE', 'CORTEX_SWARM_TOKEN')))")
    runtime = make_runtime({"env": {**script(code), "env": {"FROM_TYPE": "t", "FROM_DIRECTIVE": "overridden"}}})
    agent = await runtime.spawn("env", "go", env={"FROM_DIRECTIVE": "d"})
    outcome = await agent.wait(timeout=5)
    assert outcome.output == f"node_test_kernel {agent.agent_id} {agent.session_id} {agent.pid} t d None\n"


async def test_unknown_agent_type_names_the_allowed_ones(make_runtime):
    with pytest.raises(UnknownAgentType, match=r"unknown agent type 'gpt'; this node runs: coder, echo, sim"):
        await make_runtime({"coder": script("pass")}).spawn("gpt", "hi")
    assert issubclass(UnknownAgentType, ValueError)


async def test_unprivileged_node_runs_only_safe_agent_types(kernel, make_runtime):
    runtime = make_runtime({"coder": script("pass"), "helper": script("print('ok')", unprivileged=True)},
                           tier=NodeTier.UNPRIVILEGED)
    before = set(kernel.processes)
    with pytest.raises(NotPermitted, match="agent type 'coder' is not marked safe"):
        await runtime.spawn("coder", "hi")
    with pytest.raises(NotPermitted, match="env may not set PATH"):
        await runtime.spawn("echo", "hi", env={"PATH": "/tmp/evil"})
    assert set(kernel.processes) == before  # a refusal starts and registers nothing
    assert (await (await runtime.spawn("helper", "hi")).wait(timeout=5)).output == "ok\n"
    assert (await (await runtime.spawn("echo", "hi")).wait(timeout=5)).status == "exited"


async def test_a_program_that_cannot_start_is_a_clear_error(kernel, make_runtime):
    runtime = make_runtime({"ghost": {"argv": ["/nonexistent/agent-cli"]}})
    with pytest.raises(ProcessStartError, match="cannot start '/nonexistent/agent-cli': No such file or directory"):
        await runtime.spawn("ghost", "hi")
    assert [p.status for p in kernel.processes.values() if p.agent_type == "ghost"] == ["failed"]


async def test_bad_spawn_arguments_are_value_errors(make_runtime):
    runtime = make_runtime()
    with pytest.raises(ValueError, match="env.A must be a string"):
        await runtime.spawn("echo", "hi", env={"A": 1})
    with pytest.raises(ValueError, match="instruction must be a string, got int"):
        await runtime.spawn("echo", 5)
    with pytest.raises(ValueError, match="parent pid 77 is not in this node's process table"):
        await runtime.spawn("echo", "hi", parent_pid=77)


def test_configured_types_extend_and_replace_the_builtins():
    types = load_agent_types({"echo": {"argv": ["my-echo", "{instruction}"], "env": {"A": "1"}}})
    assert types["echo"].argv == ("my-echo", "{instruction}") and types["echo"].instruction_in_argv
    assert not types["echo"].unprivileged  # a replacement is not safe unless it says so
    assert types["sim"].unprivileged and types["sim"].argv[0] == PY


@pytest.mark.parametrize("conf, message", [
    ("cli", "settings.agents.x must be an object"),
    ({}, "settings.agents.x.argv must be a non-empty list of strings"),
    ({"argv": ["a", 1]}, "settings.agents.x.argv must be a non-empty list of strings"),
    ({"argv": ["a"], "cmd": "a"}, "settings.agents.x has unknown key(s) cmd; allowed: argv, unprivileged, env"),
    ({"argv": ["a", "{prompt}"]}, "settings.agents.x.argv uses {prompt}; the only placeholder is {instruction}"),
    ({"argv": ["a"], "unprivileged": "yes"}, "settings.agents.x.unprivileged must be true or false"),
    ({"argv": ["a"], "env": {"A": 2}}, "settings.agents.x: env.A must be a string"),
])
def test_bad_agent_config_names_the_key(conf, message):
    with pytest.raises(ValueError) as info:
        load_agent_types({"x": conf})
    assert str(info.value).startswith(message)


# --- the environment below root, per agent type -----------------------------------------------------
async def test_below_root_an_agent_gets_only_allow_listed_environment(make_runtime):
    show = "import os; print(os.environ.get('TOPIC'), os.environ.get('LANG'))"
    types = {"shows": {**script(show, unprivileged=True), "acceptsEnv": ["TOPIC"]},
             "plain": script(show, unprivileged=True)}
    for tier in (NodeTier.SUDO, NodeTier.UNPRIVILEGED):
        runtime = make_runtime(types, tier=tier)
        with pytest.raises(NotPermitted, match="env may not set BASH_FUNC_print%% on a .* it changes which code runs"):
            await runtime.spawn("shows", "go", env={"BASH_FUNC_print%%": "() { id; }"})
        with pytest.raises(NotPermitted, match="env may not set TOPIC on a"):
            await runtime.spawn("plain", "go", env={"TOPIC": "x"})
        with pytest.raises(NotPermitted, match="env may not set TOPIC on a"):
            runtime.admit("plain", "go", {"TOPIC": "x"})  # refused at admission too
        outcome = await (await runtime.spawn("shows", "go", env={"TOPIC": "t", "LANG": "C"})).wait(timeout=5)
        assert outcome.output == "t C\n"
    listed = make_runtime(types, tier=NodeTier.SUDO, allowed_env=("TOPIC",))  # swarm.allowedEnv
    assert (await (await listed.spawn("plain", "go", env={"TOPIC": "x"})).wait(timeout=5)).output == f"x {os.environ.get('LANG')}\n"
    # the built-in sim accepts its one knob everywhere
    sim = await make_runtime(tier=NodeTier.UNPRIVILEGED).spawn("sim", "q", env=FAST_SIM)
    assert (await sim.wait(timeout=5)).status == "exited"


def test_accepts_env_is_checked_when_the_config_is_read():
    assert load_agent_types({"a": {"argv": ["a"], "acceptsEnv": ["TOPIC"]}})["a"].accepts_env == {"TOPIC"}
    with pytest.raises(ValueError, match="settings.agents.a.acceptsEnv: LD_PRELOAD decides which code runs"):
        load_agent_types({"a": {"argv": ["a"], "acceptsEnv": ["LD_PRELOAD"]}})
    with pytest.raises(ValueError, match="settings.agents.a.acceptsEnv must be a list"):
        load_agent_types({"a": {"argv": ["a"], "acceptsEnv": "TOPIC"}})



async def test_a_code_running_name_on_the_operators_list_is_still_refused(make_runtime, caplog):
    runtime = make_runtime(tier=NodeTier.SUDO, allowed_env=("PATH", "TOPIC"))
    assert "swarm.allowedEnv lists PATH, which decide(s) which code runs" in caplog.text
    with pytest.raises(NotPermitted, match="env may not set PATH on a sudo node: it changes which code runs"):
        await runtime.spawn("echo", "hi", env={"PATH": "/tmp/evil"})


# --- an instruction never becomes an option -------------------------------------------------------
async def test_an_instruction_that_would_be_an_option_is_refused(make_runtime, tmp_path):
    target = tmp_path / "written-by-sort"
    types = {"sorter": {"argv": ["sort", "{instruction}"], "unprivileged": True},
             "operands": {"argv": ["sort", "--", "{instruction}"], "unprivileged": True},
             "opted": {"argv": ["sort", "{instruction}"], "allowOptionValues": True}}
    for tier in NodeTier:
        runtime = make_runtime(types, tier=tier)
        with pytest.raises(ValueError) as info:
            await runtime.spawn("sorter", f"-o{target}")
        assert str(info.value).startswith(f"the instruction begins with '-' ({f'-o{target}'[:40]!r}) and agent type 'sorter' "
                                          "puts {instruction} at the start of an argument of 'sort'")
        runtime.admit("sorter", f"-o{target}", {})  # admission raises only NotPermitted: this fails when it runs
    assert not target.exists()
    # after '--' it is an operand (sort then fails to open the file: no option was taken)
    outcome = await (await make_runtime(types).spawn("operands", f"-o{target}")).wait(timeout=5)
    assert outcome.exit_code == 2 and not target.exists()
    # the opt-in: refused below root (also at admission), honoured on root (the control: the attack is real)
    sudo = make_runtime(types, tier=NodeTier.SUDO)
    with pytest.raises(NotPermitted, match=r"agent type 'opted' lets \{instruction\} begin with '-'"):
        await sudo.spawn("opted", f"-o{target}")
    with pytest.raises(NotPermitted, match="only a root node honours; this node's tier is sudo"):
        sudo.admit("opted", f"-o{target}", {})
    await (await make_runtime(types).spawn("opted", f"-o{target}")).wait(timeout=5)
    assert target.exists()


# --- the live-agent limit -------------------------------------------------------------------------
async def test_live_agents_are_capped_attached_and_detached_together(make_runtime):
    runtime = make_runtime({"waits": script("import sys; sys.stdin.read()")}, max_agents=2)
    assert runtime.max_agents == 2
    detached = await runtime.spawn("echo", "one", detach=True)
    attached = await runtime.spawn("waits", "two")  # attached: stdin closes, but it lives until it reads EOF
    with pytest.raises(AgentLimitReached) as info:
        await runtime.spawn("echo", "three", detach=True)
    assert info.value.message.startswith("this node already runs 2 live agents, its limit (maxAgents = 2, "
                                         "attached and detached together)")
    assert info.value.reason == "agent_limit" and isinstance(info.value, NotPermitted)
    with pytest.raises(AgentLimitReached):
        runtime.admit("echo", "three", {})
    await attached.wait(timeout=5)
    detached.end_input()
    await detached.wait(timeout=5)
    await eventually(lambda: runtime.live_agents() == 0)
    assert (await (await runtime.spawn("echo", "again")).wait(timeout=5)).status == "exited"


async def test_concurrent_spawns_never_pass_the_limit(make_runtime):
    runtime = make_runtime(max_agents=3)
    results = await asyncio.gather(*(runtime.spawn("echo", f"n{i}", detach=True) for i in range(8)),
                                   return_exceptions=True)
    started = [r for r in results if not isinstance(r, BaseException)]
    assert len(started) == 3 and all(isinstance(r, AgentLimitReached) for r in results if r not in started)
    assert len(runtime.running()) == 3


def test_the_limit_has_a_default_and_must_be_positive(kernel):
    assert AgentRuntime(kernel, kernel.clock, {}, tier=NodeTier.ROOT).max_agents == MAX_AGENTS == 64
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="max_agents must be an integer >= 1"):
            AgentRuntime(kernel, kernel.clock, {}, tier=NodeTier.ROOT, max_agents=bad)


# --- children are recorded while they run ---------------------------------------------------------
async def test_a_tracked_agent_has_a_record_and_a_tag_while_it_runs(make_runtime, tmp_path):
    state = tmp_path / "children"
    runtime = make_runtime({"tagged": script("import os, sys; print(os.environ['CORTEX_CHILD_TAG']); "
                                             "sys.stdout.flush(); sys.stdin.read()")}, state_dir=state)
    agent = await runtime.spawn("tagged", "go", detach=True)
    (record,) = [json.loads(p.read_text()) for p in state.glob("*.json")]
    assert (record["pid"], record["pgid"], record["nodePid"]) == (agent.os_pid, agent.os_pid, os.getpid())
    assert record["what"] == f"agent {agent.agent_id} (tagged) in session {agent.session_id}"
    agent.end_input()
    outcome = await agent.wait(timeout=5)
    assert outcome.output.strip() == record["tag"]
    assert list(state.iterdir()) == []  # gone with the agent
    untracked = make_runtime()
    assert not untracked.children.enabled
