"""The local agent runtime behind spawn_agent and forward_message.

An agent is a process of a configured type, registered in the OsKernel with role "agent". The
types are the built-ins ``echo`` and ``sim`` plus settings.agents (name -> {"argv": [...],
"unprivileged": bool, "env": {...}, "acceptsEnv": [names], "allowOptionValues": bool}); a
configured name replaces a built-in. ``acceptsEnv`` names the variables a directive may set for
this type on nodes below root (policy.py); ``allowOptionValues`` lets an ``{instruction}`` that
begins with '-' start an argv element, on root nodes only (otherwise it is refused: it would be
read as an option).

A node runs at most ``max_agents`` live agents (attached and detached together; MAX_AGENTS by
default); one more is refused with AgentLimitReached, naming the limit.

What an agent program can rely on:
- its instruction: in argv, where an element of its type's argv holds ``{instruction}``;
  otherwise as the first line of its stdin (line breaks in it become spaces there).
- stdin: a detached agent's stdin stays open and carries forwarded messages, one JSON object a
  line; an attached one gets end-of-file right after its instruction.
- stdout is its output, except lines ``{"cortex": "usage", "tokensIn": n, "tokensOut": n,
  "costUsd": x, "toolCalls": n}`` (all optional), which add to its resource counters.
- its environment names it: CORTEX_NODE_ID, CORTEX_AGENT_ID, CORTEX_SESSION_ID, CORTEX_KERNEL_PID
  (and CORTEX_CHILD_TAG when the node records its children: how a restarted node finds what an
  agent left running, see children.py).
- SIGTERM to its process group asks it to stop; SIGKILL follows after a grace period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import psutil

from cortex_node.clock import Clock
from cortex_node.contracts import NodeTier, ProcessInfo, ProcessStatus, RunMetrics, new_id
from cortex_node.kernel.children import ChildTracker
from cortex_node.kernel.commands import (
    OPTION_OPT_IN,
    OUTPUT_LIMIT,
    CappedBuffer,
    ChildProcess,
    ExitStatus,
    fill_placeholders,
    option_placeholders,
    parse_env,
    placeholders,
    wait_until,
)
from cortex_node.kernel.policy import (
    NotPermitted,
    check_allowed_env_names,
    check_spawn,
    child_environment,
    is_code_env,
    option_values_refusal,
)
from cortex_node.kernel.process_table import OsKernel

log = logging.getLogger("cortex.agents")

MB = 1024 * 1024
SAMPLE_INTERVAL_S = 1.0
FIRST_SAMPLE_S = 0.05  # the interval starts here and doubles up to SAMPLE_INTERVAL_S
TERMINATE_GRACE_S = 2.0
STDERR_LIMIT = 16 * 1024
MAX_PENDING_LINE = 64 * 1024  # longer unfinished lines pass as output (usage lines are far shorter)
TRUNCATION_MARKER = "\n[output truncated by cortex-node: {dropped} more bytes]\n"
MAX_AGENTS = 64  # live agents per node, attached and detached together (swarm.maxAgents)
AGENT_TYPE_KEYS = ("argv", "unprivileged", "env", "acceptsEnv", OPTION_OPT_IN)
USAGE_FIELDS = (("tokensIn", "tokens_in", int), ("tokensOut", "tokens_out", int),
                ("costUsd", "cost_usd", float), ("toolCalls", "tool_calls", int))


class UnknownAgentType(ValueError):
    pass


class AgentLimitReached(NotPermitted):
    """The node already runs as many live agents as it may."""

    reason = "agent_limit"


@dataclass(frozen=True)
class AgentType:
    name: str
    argv: tuple[str, ...]
    unprivileged: bool = False  # safe to run on an unprivileged node
    env: Mapping[str, str] = field(default_factory=dict)
    accepts_env: frozenset[str] = frozenset()  # names a directive may set for it below root
    allow_option_values: bool = False  # an {instruction} may begin an argv element with '-' (root only)

    @property
    def instruction_in_argv(self) -> bool:
        return any("instruction" in placeholders(arg) for arg in self.argv)


BUILTIN_AGENT_TYPES = {
    "echo": AgentType("echo", (sys.executable, "-m", "cortex_node.kernel.echo_agent"), unprivileged=True),
    "sim": AgentType("sim", (sys.executable, "-m", "cortex_node.kernel.sim_agent", "--instruction={instruction}"),
                     unprivileged=True, accepts_env=frozenset({"CORTEX_SIM_SECONDS"})),
}


def load_agent_types(config: Mapping[str, Any]) -> dict[str, AgentType]:
    """The built-ins plus settings.agents. Raises ValueError naming the bad key."""
    types = dict(BUILTIN_AGENT_TYPES)
    for name, conf in config.items():
        where = f"settings.agents.{name}"
        if not isinstance(conf, dict):
            raise ValueError(f"{where} must be an object with \"argv\": a non-empty list of strings")
        unknown = sorted(set(conf) - set(AGENT_TYPE_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(AGENT_TYPE_KEYS)}")
        argv = conf.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise ValueError(f"{where}.argv must be a non-empty list of strings")
        others = sorted(set().union(*(placeholders(a) for a in argv)) - {"instruction"})
        if others:
            raise ValueError(f"{where}.argv uses {{{others[0]}}}; the only placeholder is {{instruction}}")
        unprivileged = conf.get("unprivileged", False)
        if not isinstance(unprivileged, bool):
            raise ValueError(f"{where}.unprivileged must be true or false")
        try:
            env = parse_env(conf.get("env", {}))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        accepts = conf.get("acceptsEnv", [])
        if not isinstance(accepts, list):
            raise ValueError(f"{where}.acceptsEnv must be a list of environment variable names")
        try:
            accepts = check_allowed_env_names(accepts)
        except ValueError as exc:
            raise ValueError(f"{where}.acceptsEnv: {exc}") from None
        opted_in = conf.get(OPTION_OPT_IN, False)
        if not isinstance(opted_in, bool):
            raise ValueError(f"{where}.{OPTION_OPT_IN} must be true or false")
        types[name] = AgentType(name, tuple(argv), unprivileged, env, frozenset(accepts), opted_in)
    return types


@dataclass
class AgentOutcome:
    status: ProcessStatus  # exited (code 0) | failed | killed (terminated by us)
    exit_code: int  # negative: the signal that ended it
    output: str  # stdout without usage lines, capped (a marker says so)
    truncated: bool
    stderr: str  # the first STDERR_LIMIT bytes: how a failed agent explains itself
    metrics: RunMetrics


def parse_usage_line(line: bytes) -> dict[str, int | float] | None:
    """The counters of a ``{"cortex": "usage", ...}`` line, or None when the line is output."""
    if b'"cortex"' not in line:  # most lines are output: skip the JSON parser for them
        return None
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("cortex") != "usage":
        return None
    usage: dict[str, int | float] = {}
    for key, name, kind in USAGE_FIELDS:
        value = doc.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            log.warning("ignoring %s=%r in an agent's usage line: counters take numbers >= 0", key, value)
            continue
        usage[name] = kind(value)
    return usage


class AgentStdout:
    """Splits stdout into lines: usage lines go to ``on_usage``, the rest into the capped output."""

    def __init__(self, limit: int, on_usage: Callable[[dict], None]) -> None:
        self._output = CappedBuffer(limit)
        self._on_usage = on_usage
        self._line = bytearray()
        self._in_long_line = False  # the rest of a line already passed on as output

    def feed(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            stop = len(data) if newline < 0 else newline + 1
            self._take(data[start:stop], complete=newline >= 0)
            start = stop

    def close(self) -> None:
        if self._line:
            self._emit()

    def _take(self, piece: bytes, *, complete: bool) -> None:
        if self._in_long_line:
            self._output.add(piece)
            self._in_long_line = not complete
            return
        self._line += piece
        if complete:
            self._emit()
        elif len(self._line) > MAX_PENDING_LINE:  # keep memory bounded on output without newlines
            self._output.add(bytes(self._line))
            self._line.clear()
            self._in_long_line = True

    def _emit(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        usage = parse_usage_line(line)
        if usage is None:
            self._output.add(line)
        else:
            self._on_usage(usage)

    @property
    def truncated(self) -> bool:
        return self._output.truncated

    def text(self) -> str:
        text = self._output.text()
        if self._output.truncated:
            text += TRUNCATION_MARKER.format(dropped=self._output.dropped)
        return text


class RunningAgent:
    """A live agent process; AgentRuntime.spawn makes them."""

    def __init__(self, info: ProcessInfo, kernel: OsKernel, clock: Clock, *, output_limit: int,
                 sample_interval: float) -> None:
        self.pid = info.pid
        self.agent_id: str = info.agent_id
        self.session_id: str = info.session_id
        self.agent_type: str = info.agent_type
        self.os_pid = 0  # set by _start
        self._info = info
        self._kernel = kernel
        self._clock = clock
        self._sample_interval = sample_interval
        self._stdout = AgentStdout(output_limit, lambda usage: kernel.add_usage(info.pid, **usage))
        self._stderr = CappedBuffer(STDERR_LIMIT)
        self._child: ChildProcess | None = None
        self._terminated = False
        self._started = clock.monotonic()
        self._done: asyncio.Future[AgentOutcome] = asyncio.get_running_loop().create_future()
        self._supervisor: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return not self._done.done()

    async def wait(self, timeout: float | None = None) -> AgentOutcome:
        """Its outcome once it has exited. Raises asyncio.TimeoutError after ``timeout`` seconds,
        leaving it running."""
        if not await wait_until(self._done, self._clock, timeout):
            raise asyncio.TimeoutError(f"agent {self.agent_id} still running after {timeout} s")
        return self._done.result()

    async def terminate(self, grace: float = TERMINATE_GRACE_S) -> AgentOutcome:
        """SIGTERM to its process group, SIGKILL after ``grace`` seconds. Status "killed" unless
        it had exited already."""
        if self._child.running:
            self._terminated = True
            await self._child.stop(self._clock, grace)
        return await asyncio.shield(self._done)

    async def send_message(self, message: dict) -> bool:
        """Write ``message`` as one JSON line on its stdin, waiting while the pipe is full (bound
        the wait if the agent may not read). False when it no longer runs or takes no messages
        (an attached agent's stdin closes after the instruction)."""
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n"
        return await self._child.write(line.encode())

    def end_input(self) -> None:
        """Close its stdin: an agent that reads messages finishes when it sees end-of-file."""
        self._child.close_stdin()

    async def _start(self, argv: list[str], env: dict[str, str], first_line: str | None, detach: bool,
                     on_finished: Callable[[RunningAgent], None], tracker: ChildTracker | None = None,
                     what: str = "") -> None:
        self._child = await ChildProcess.start(
            argv, cwd=None, env=env, on_stdout=self._stdout.feed, on_stderr=self._stderr.add,
            with_stdin=first_line is not None or detach, tracker=tracker, what=what,
            pdeathsig=True,  # an agent outliving its node would work (and spend) for nobody
        )
        self.os_pid = self._info.os_pid = self._child.pid
        if first_line is not None:
            self._child.write_nowait(first_line.encode())
        if not detach:
            self._child.close_stdin()
        self._supervisor = asyncio.create_task(self._supervise(on_finished), name=f"agent {self.agent_id}")

    async def _supervise(self, on_finished: Callable[[RunningAgent], None]) -> None:
        sampler = asyncio.create_task(self._sample_while_running())
        try:
            self._finish(await self._child.finish(self._clock))
        except asyncio.CancelledError:  # the runtime goes away without a shutdown: the agent goes too
            self._child.kill()
            raise
        except Exception as exc:  # its waiters must hear of it rather than hang
            log.exception("agent %s (os pid %s): supervision failed", self.agent_id, self.os_pid)
            self._kernel.finish(self.pid, ProcessStatus.FAILED, None)
            self._done.set_exception(exc)
        finally:
            sampler.cancel()
            on_finished(self)

    def _finish(self, exit_status: ExitStatus) -> None:
        self._stdout.close()
        self._kernel.set_process_sample(self.pid, exit_status.cpu_ms, 0.0)  # cpu only: memory peaks come from samples
        status = (ProcessStatus.KILLED if self._terminated
                  else ProcessStatus.EXITED if exit_status.exit_code == 0 else ProcessStatus.FAILED)
        self._kernel.finish(self.pid, status, exit_status.exit_code)
        metrics = RunMetrics(**vars(self._info.resources.rounded()),
                             duration_ms=round((self._clock.monotonic() - self._started) * 1000))
        self._done.set_result(AgentOutcome(
            status=status, exit_code=exit_status.exit_code, output=self._stdout.text(),
            truncated=self._stdout.truncated, stderr=self._stderr.text(), metrics=metrics,
        ))

    async def _sample_while_running(self) -> None:
        """psutil figures of the agent and its live descendants: cpu for the counters peers see
        while it runs (the exact total comes at exit), memory for the peak. Samples come often
        at first, so that a short run is measured too."""
        try:
            proc = psutil.Process(self.os_pid)
        except psutil.NoSuchProcess:
            return
        delay = min(FIRST_SAMPLE_S, self._sample_interval)
        while self._child.running:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    cpu_s = t.user + t.system + t.children_user + t.children_system
                    memory = _peak_rss(proc)
                for child in proc.children(recursive=True):
                    try:
                        ct = child.cpu_times()
                        cpu_s += ct.user + ct.system
                        memory += _peak_rss(child)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return
            self._kernel.set_process_sample(self.pid, cpu_s * 1000.0, memory / MB)
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._sample_interval)


def _peak_rss(proc: psutil.Process) -> int:
    """Bytes: Linux keeps each process's high-water resident size (VmHWM), so no peak between
    two samples is missed; elsewhere the current resident size."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{proc.pid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return proc.memory_info().rss


class AgentRuntime:
    """Starts agents for spawn_agent and finds them again for forward_message. Only live agents
    are kept here; the kernel's process table keeps their history."""

    def __init__(self, kernel: OsKernel, clock: Clock, agent_types: Mapping[str, Any], *, tier: NodeTier,
                 output_limit: int = OUTPUT_LIMIT, sample_interval: float = SAMPLE_INTERVAL_S,
                 allowed_env: Sequence[str] = (), max_agents: int = MAX_AGENTS,
                 state_dir: Path | None = None) -> None:
        """``allowed_env``: names directives may set below root (swarm.allowedEnv), for agents and
        for execute_task; ``max_agents``: live agents at most (swarm.maxAgents); ``state_dir``:
        where live children are recorded, so that a restart can end what a crash left running
        (children.reap_orphans on the same directory); None records nothing."""
        if isinstance(max_agents, bool) or not isinstance(max_agents, int) or max_agents < 1:
            raise ValueError(f"max_agents must be an integer >= 1, got {max_agents!r}")
        self.kernel = kernel
        self.clock = clock
        self.tier = tier
        self.types = load_agent_types(agent_types)
        self.output_limit = output_limit
        self.sample_interval = sample_interval
        self.allowed_env = tuple(allowed_env)
        ignored = [name for name in self.allowed_env if is_code_env(name)]
        if ignored:  # refused whatever the list says (policy.check_env): say so once, at start
            log.warning("swarm.allowedEnv lists %s, which decide(s) which code runs: directives below root "
                        "still may not set them", ", ".join(ignored))
        self.max_agents = max_agents
        self.children = ChildTracker(state_dir)  # shared with execute_task's commands
        self._agents: dict[str, RunningAgent] = {}  # agent id -> live agent
        self._starting = 0  # spawns between the limit check and their entry in _agents

    def admit(self, agent_type: str, instruction: Any, env: Mapping[str, Any] | None) -> None:
        """The policy part of spawn, for admission: raises NotPermitted (AgentLimitReached) when
        the tier or the limit refuses it. What is merely malformed fails when it runs."""
        conf = self.types.get(agent_type)
        if conf is None:  # fails when it runs, naming the known types
            return
        try:
            extra_env = parse_env(env or {})
        except ValueError:
            return
        check_spawn(self.tier, conf, extra_env, self.allowed_env)
        if isinstance(instruction, str):
            try:
                self._check_instruction(conf, instruction)
            except ValueError:  # an option-like instruction without the opt-in: it fails when it runs
                pass
        self._check_limit()

    def live_agents(self) -> int:
        return len(self._agents) + self._starting

    def _check_limit(self) -> None:
        if self.live_agents() >= self.max_agents:
            raise AgentLimitReached(
                f"this node already runs {self.live_agents()} live agents, its limit (maxAgents = {self.max_agents}, "
                "attached and detached together): wait for one to end, end a detached one, or send the work to "
                "another node")

    def _check_instruction(self, conf: AgentType, instruction: str) -> None:
        """An instruction that would begin an argv element with '-' would be read as an option."""
        if not conf.instruction_in_argv or not option_placeholders(conf.argv, {"instruction": instruction}):
            return
        if not conf.allow_option_values:
            raise ValueError(
                f"the instruction begins with '-' ({instruction[:40]!r}) and agent type {conf.name!r} puts "
                f"{{instruction}} at the start of an argument of {conf.argv[0]!r}, which would read it as an "
                f"option; send it without the leading '-', or the type's argv can put '--' before "
                f"{{instruction}} (or opt in with \"{OPTION_OPT_IN}\": true, root nodes only)")
        if self.tier is not NodeTier.ROOT:
            raise NotPermitted(option_values_refusal(self.tier, f"agent type {conf.name!r}", "instruction"))

    async def spawn(self, agent_type: str, instruction: str, *, session_id: str | None = None,
                    env: Mapping[str, str] | None = None, parent_pid: int = 1, detach: bool = False) -> RunningAgent:
        """Start an agent. A detached one keeps its stdin open for send_message; an attached one
        gets end-of-file after its instruction. Raises UnknownAgentType, NotPermitted,
        ValueError (bad arguments) or ProcessStartError."""
        conf = self.types.get(agent_type)
        if conf is None:
            known = ", ".join(sorted(self.types))
            raise UnknownAgentType(f"unknown agent type {agent_type!r}; this node runs: {known}")
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise ValueError(f"sessionId must be a non-empty string, got {session_id!r}")
        extra_env = parse_env(env or {})
        check_spawn(self.tier, conf, extra_env, self.allowed_env)
        if parent_pid not in self.kernel.processes:
            raise ValueError(f"parent pid {parent_pid} is not in this node's process table")
        self._check_instruction(conf, instruction)
        self._check_limit()
        if conf.instruction_in_argv:
            if "\0" in instruction:
                raise ValueError("the instruction contains a NUL character, which cannot travel in argv")
            argv = [fill_placeholders(arg, {"instruction": instruction}) for arg in conf.argv]
            first_line = None
        else:
            argv = list(conf.argv)
            first_line = " ".join(instruction.splitlines()) + "\n"

        now = self.clock.now_ms()
        agent_id = new_id("agent", now)
        session_id = session_id or new_id("sess", now)
        info = self.kernel.register(agent_type, role="agent", parent_pid=parent_pid, agent_id=agent_id,
                                    session_id=session_id, agent_type=agent_type)
        agent = RunningAgent(info, self.kernel, self.clock, output_limit=self.output_limit,
                             sample_interval=self.sample_interval)
        child_env = child_environment({
            **conf.env, **extra_env,
            "CORTEX_NODE_ID": self.kernel.node_id, "CORTEX_AGENT_ID": agent_id,
            "CORTEX_SESSION_ID": session_id, "CORTEX_KERNEL_PID": str(info.pid),
        })
        what = f"agent {agent_id} ({agent_type}) in session {session_id}"
        self._starting += 1
        try:
            await agent._start(argv, child_env, first_line, detach, on_finished=self._forget,
                               tracker=self.children, what=what)
        except BaseException:
            self.kernel.finish(info.pid, ProcessStatus.FAILED, None)
            raise
        finally:
            self._starting -= 1
        self._agents[agent_id] = agent
        log.info("agent %s (%s, kernel pid %s, os pid %s) started in session %s",
                 agent_id, agent_type, info.pid, agent.os_pid, session_id)
        return agent

    def find_by_agent_id(self, agent_id: str) -> RunningAgent | None:
        return self._agents.get(agent_id)

    def find_by_session(self, session_id: str) -> list[RunningAgent]:
        return [a for a in self._agents.values() if a.session_id == session_id]

    def running(self) -> list[RunningAgent]:
        return list(self._agents.values())

    async def shutdown(self, grace: float = TERMINATE_GRACE_S) -> None:
        """Terminate every live agent (the daemon is stopping)."""
        # a supervision failure was logged where it happened; the others must still be stopped
        await asyncio.gather(*(agent.terminate(grace) for agent in self.running()), return_exceptions=True)

    def _forget(self, agent: RunningAgent) -> None:
        self._agents.pop(agent.agent_id, None)
