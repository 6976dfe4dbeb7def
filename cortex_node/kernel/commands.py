"""execute_task: turn a directive payload into a CommandSpec and run it as its own process group.

Payload: ``{command: [argv] | "string", shell?, cwd?, env?, stdin?}`` or ``{tool: NAME, args?,
cwd?, env?, stdin?}``. A string command is split with shlex and never passes through a shell
unless ``shell`` is true, which only a root node allows: the caller runs policy.check_execute on
the spec before run_command.

The process leads a new session, so one killpg reaches everything it started: on a timeout, on
cancellation, and for whatever it leaves behind when it exits (stragglers would otherwise keep
its pipes open and outlive the task). ChildProcess, which does this, also runs the agents. With
a ChildTracker it is recorded in the data directory so that a restarted node ends what a crash
left (children.py). Commands do not ask for PR_SET_PDEATHSIG by default (COMMAND_PDEATHSIG): it
needs a preexec_fn, which makes every start a full fork() of the daemon instead of a vfork, in
the event loop's thread (measured: +3.3 ms per start at a 60 MB daemon; the 10,000-directive load
test went from 27 s to 58 s). Agents, few and long-lived, do ask for it.

A tool's ``{name}`` placeholders are filled from ``args``; a value that would begin an argv
element with ``-`` (and so be read as an option: ``sort {file}`` with ``-o/etc/passwd``) is
refused, unless the element comes after a literal ``--`` in the tool's argv (operands from there
on, for programs that follow the convention) or the tool opts in with ``"allowOptionValues":
true``, which only a root node honours (policy.check_execute).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shlex
import signal
import subprocess
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cortex_node.clock import Clock
from cortex_node.contracts import ExecuteTaskOutput
from cortex_node.kernel.children import TAG_ENV, ChildTracker, pdeathsig_preexec
from cortex_node.kernel.policy import child_environment

OUTPUT_LIMIT = 64 * 1024  # bytes kept of each of stdout and stderr
KILL_GRACE_S = 1.0  # between SIGTERM and SIGKILL when a command runs out of time
PIPE_GRACE_S = 1.0  # for the last output after the exit

EXECUTE_KEYS = ("command", "shell", "cwd", "env", "stdin", "tool", "args")
TOOL_KEYS = ("argv", "allowOptionValues")
OPTION_OPT_IN = "allowOptionValues"  # settings.tools.X / settings.agents.X: values may begin with '-' (root only)
END_OF_OPTIONS = "--"
COMMAND_PDEATHSIG = False  # see the module docstring: a command's leader is ended by the next start instead
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ProcessStartError(Exception):
    """The program could not be started (not found, not executable, bad cwd, ...)."""


@dataclass
class CommandSpec:
    argv: tuple[str, ...] = ()  # exec form: the program and its arguments, no shell involved
    shell_script: str | None = None  # set instead of argv only when the directive asked for a shell
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of the daemon's environment
    stdin: str | None = None
    tool: str | None = None  # the settings.tools entry it came from, if any
    option_args: tuple[str, ...] = ()  # placeholders whose value begins an argv element with '-' (opted in)

    @property
    def shell(self) -> bool:
        return self.shell_script is not None


@dataclass
class CommandOutcome(ExecuteTaskOutput):
    timed_out: bool = False


# --- payload -> spec ------------------------------------------------------------------------------
def parse_execute_payload(payload: Any, tools: Mapping[str, Any]) -> CommandSpec:
    """Validate an execute_task payload. Raises ValueError saying what is wrong and what is allowed."""
    if not isinstance(payload, dict):
        raise ValueError(f"the execute_task payload must be an object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(EXECUTE_KEYS))
    if unknown:
        raise ValueError(f"unknown execute_task key(s) {', '.join(unknown)}; allowed: {', '.join(EXECUTE_KEYS)}")
    if ("command" in payload) == ("tool" in payload):
        got = "both" if "command" in payload else "neither"
        raise ValueError("execute_task needs exactly one of command (an argv list or a string) "
                         f"and tool (a name from settings.tools); got {got}")
    shell = payload.get("shell", False)
    if not isinstance(shell, bool):
        raise ValueError(f"shell must be true or false, got {shell!r}")
    cwd = payload.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
        raise ValueError(f"cwd must be a non-empty directory path, got {cwd!r}")
    stdin = payload.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise ValueError(f"stdin must be a string, got {type(stdin).__name__}")
    common = dict(cwd=cwd, env=parse_env(payload.get("env", {})), stdin=stdin)

    if "tool" in payload:
        if shell:
            raise ValueError("shell applies to command, not to tool: a tool always runs as its argv")
        name = payload["tool"]
        argv, option_args = tool_command(name, payload.get("args", {}), tools)
        return CommandSpec(argv=argv, tool=name, option_args=option_args, **common)
    if "args" in payload:
        raise ValueError("args goes with tool; a command carries its arguments itself")
    command = payload["command"]
    if shell:
        if not isinstance(command, str) or not command.strip() or "\0" in command:
            raise ValueError("with shell: true, command must be one non-empty string (the shell script)")
        return CommandSpec(shell_script=command, **common)
    return CommandSpec(argv=_command_argv(command), **common)


def parse_env(env: Any) -> dict[str, str]:
    if not isinstance(env, dict):
        raise ValueError(f"env must be an object of string values, got {type(env).__name__}")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"env name {name!r} is not valid: it must be non-empty, without '=' or NUL")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"env.{name} must be a string without NUL characters, got {value!r}")
    return dict(env)


def _command_argv(command: Any) -> tuple[str, ...]:
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"command {command!r} cannot be split into arguments: {exc}") from None
    elif isinstance(command, list):
        for i, arg in enumerate(command):
            if not isinstance(arg, str):
                raise ValueError(f"command[{i}] must be a string, got {type(arg).__name__}")
        argv = command
    else:
        raise ValueError(f"command must be an argv list of strings or a string, got {type(command).__name__}")
    if not argv or not argv[0]:
        raise ValueError("command is empty: argv[0] must name the program to run")
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise ValueError(f"command[{i}] contains a NUL character")
    return tuple(argv)


def tool_argv(name: Any, args: Any, tools: Mapping[str, Any]) -> tuple[str, ...]:
    """The argv of a settings.tools entry with its ``{arg}`` placeholders filled from ``args``."""
    return tool_command(name, args, tools)[0]


def tool_command(name: Any, args: Any, tools: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The filled argv of a settings.tools entry, and the placeholders whose value begins an
    argv element with '-' (only a tool that opts in with allowOptionValues gets any; others are
    refused here with a ValueError naming the placeholder)."""
    if not isinstance(name, str) or name not in tools:
        known = ", ".join(sorted(tools)) or "none are configured"
        raise ValueError(f"unknown tool {name!r}; tools on this node: {known}")
    conf = tools[name]
    template = conf.get("argv") if isinstance(conf, dict) else None
    if (not isinstance(template, list) or not template
            or not all(isinstance(a, str) for a in template) or not template[0]):
        raise ValueError(f"settings.tools.{name} must be an object with \"argv\": a non-empty list of strings")
    extra = sorted(set(conf) - set(TOOL_KEYS))
    if extra:
        raise ValueError(f"settings.tools.{name} has unknown key(s) {', '.join(extra)}; allowed: {', '.join(TOOL_KEYS)}")
    opted_in = conf.get(OPTION_OPT_IN, False)
    if not isinstance(opted_in, bool):
        raise ValueError(f"settings.tools.{name}.{OPTION_OPT_IN} must be true or false")
    if not isinstance(args, dict):
        raise ValueError(f"args must be an object, got {type(args).__name__}")
    wanted = sorted(set().union(*(placeholders(a) for a in template)))
    takes = ", ".join(wanted) or "no arguments"
    values: dict[str, str] = {}
    for key, value in args.items():
        if key not in wanted:
            raise ValueError(f"tool {name!r} has no argument {key!r}; it takes: {takes}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"args.{key} must be a string or a number, got {value!r}")
        if "\0" in str(value):
            raise ValueError(f"args.{key} contains a NUL character")
        values[key] = str(value)
    missing = [w for w in wanted if w not in values]
    if missing:
        raise ValueError(f"tool {name!r} needs argument(s) {', '.join(missing)}; it takes: {takes}")
    options = option_placeholders(template, values)
    if options and not opted_in:
        key = options[0]
        raise ValueError(
            f"args.{key} is {values[key]!r}: it begins with '-', and tool {name!r} puts {{{key}}} where "
            f"{template[0]!r} would read it as an option. A value may not become an option (write a file "
            f"name as ./{values[key]}); the tool's argv can put '--' before {{{key}}}, or opt in with "
            f"\"{OPTION_OPT_IN}\": true (root nodes only)")
    return tuple(fill_placeholders(a, values) for a in template), tuple(options)


def fill_placeholders(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``{name}`` with its value. One pass: a value is never expanded itself, and it
    stays inside its one argv element whatever characters it holds."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def option_placeholders(template_argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """The placeholders whose value would begin an argv element with '-', where a program reads
    options: after argv[0] and before a literal ``--`` element. ``--to={x}`` is safe whatever
    ``x`` holds; ``{x}`` and ``{empty}{x}`` are not when ``x`` begins with '-'."""
    found = []
    for template in template_argv[1:]:
        if template == END_OF_OPTIONS:
            break
        pos = 0
        while (m := _PLACEHOLDER.match(template, pos)) is not None:  # placeholders at the element's start
            value = values.get(m.group(1), "")
            if value:
                if value.startswith("-"):
                    found.append(m.group(1))
                break
            pos = m.end()  # an empty value: the next one begins the element
    return found


# --- running --------------------------------------------------------------------------------------
class CappedBuffer:
    """Keeps the first ``limit`` bytes and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()
        self.dropped = 0

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def add(self, chunk: bytes) -> None:
        kept = chunk[:max(self.limit - len(self._data), 0)]
        self._data += kept
        self.dropped += len(chunk) - len(kept)

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")


async def run_command(spec: CommandSpec, *, timeout: float, clock: Clock, output_limit: int = OUTPUT_LIMIT,
                      children: ChildTracker | None = None, what: str = "",
                      pdeathsig: bool = COMMAND_PDEATHSIG) -> CommandOutcome:
    """Run the command to its end or until ``timeout`` seconds (the directive's TTL) pass, then
    stop its whole process group. ``children`` records it while it runs (``what`` says what it
    is); ``pdeathsig``: its leader gets SIGTERM when the daemon dies (Linux; costs a fork).
    Raises ProcessStartError when it cannot start."""
    started = clock.monotonic()
    out, err = CappedBuffer(output_limit), CappedBuffer(output_limit)
    argv = ("/bin/sh", "-c", spec.shell_script) if spec.shell_script is not None else spec.argv
    child = await ChildProcess.start(argv, cwd=spec.cwd, env=child_environment(spec.env),
                                     on_stdout=out.add, on_stderr=err.add, with_stdin=spec.stdin is not None,
                                     tracker=children, what=what or f"command {shlex.join(argv)}",
                                     pdeathsig=pdeathsig)
    if spec.stdin is not None:
        child.write_nowait(spec.stdin.encode())
        child.close_stdin()  # after the buffered input is written
    timed_out = False
    try:
        if not await wait_until(child.exited, clock, timeout):
            timed_out = True
            await child.stop(clock, KILL_GRACE_S)
        status = await child.finish(clock)
    except BaseException:  # cancelled (CancelTask, shutdown): nothing of it may outlive the directive
        child.kill()
        raise
    return CommandOutcome(
        exit_code=status.exit_code, stdout=out.text(), stderr=err.text(),
        stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        duration_ms=round((clock.monotonic() - started) * 1000), timed_out=timed_out,
    )


# --- child processes (shared with the agent runtime) ----------------------------------------------
@dataclass
class ExitStatus:
    exit_code: int  # negative: the signal that ended it
    cpu_ms: float  # user + system time of the process and of the children it waited for


class ChildProcess:
    """A child process leading its own session, its pipes served by the event loop.

    It is reaped by wait4 in a thread of its own rather than by asyncio's child watcher: wait4
    also reports the exact cpu time of the whole run, which sampling a live process cannot (a
    short run may end before the next sample). Its ru_maxrss is not used: it counts the parent's
    memory the child held between fork and exec.
    """

    def __init__(self, popen: subprocess.Popen, exited: asyncio.Future, pipes_closed: asyncio.Future,
                 read_transports: list[asyncio.BaseTransport], stdin: asyncio.WriteTransport | None,
                 stdin_flow: _PipeWriter | None, record: Path | None = None) -> None:
        self._popen = popen
        self._record = record  # its ChildTracker record, removed once its group has been ended
        self.exited = exited  # -> ExitStatus
        self._pipes_closed = pipes_closed
        self._read_transports = read_transports
        self._stdin = stdin
        self._stdin_flow = stdin_flow

    @classmethod
    async def start(cls, argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str],
                    on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None],
                    with_stdin: bool, tracker: ChildTracker | None = None, what: str = "",
                    pdeathsig: bool = False) -> ChildProcess:
        """Start it in a new session. With a ``tracker`` it carries a tag in its environment and a
        record in the data directory until its group is ended (``what`` describes it there). With
        ``pdeathsig`` (Linux) it gets children.PDEATHSIG when this thread of the daemon dies; that
        costs a fork() instead of a vfork() (see the module docstring)."""
        tag = tracker.new_tag() if tracker is not None else None
        env = dict(env)
        if tag is not None:
            env[TAG_ENV] = tag
        try:
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
                preexec_fn=pdeathsig_preexec() if pdeathsig else None,
            )
        except OSError as exc:
            raise ProcessStartError(_start_error_message(exc, argv[0], cwd)) from None
        except subprocess.SubprocessError as exc:  # the preexec step failed in the child
            raise ProcessStartError(f"cannot start {argv[0]!r}: {exc}") from None
        # recorded before the reaper thread can wait for it: its start time is readable until then
        record = tracker.add(popen.pid, tag, what) if tracker is not None else None
        exited = _reap_in_thread(popen)
        loop = asyncio.get_running_loop()
        read_transports: list[asyncio.BaseTransport] = []
        try:
            out_transport, out = await loop.connect_read_pipe(lambda: _PipeReader(on_stdout), popen.stdout)
            read_transports.append(out_transport)
            err_transport, err = await loop.connect_read_pipe(lambda: _PipeReader(on_stderr), popen.stderr)
            read_transports.append(err_transport)
            stdin, stdin_flow = None, None
            if with_stdin:
                stdin, stdin_flow = await loop.connect_write_pipe(_PipeWriter, popen.stdin)
        except BaseException:  # cancelled while connecting: leave no process and no open pipe behind
            with suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            ChildTracker.remove(record)
            for transport in read_transports:
                transport.close()
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()  # including those no transport has taken yet
            raise
        pipes_closed = asyncio.gather(out.closed, err.closed)
        return cls(popen, exited, pipes_closed, read_transports, stdin, stdin_flow, record)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def kill_group(self, sig: int) -> None:
        with suppress(ProcessLookupError):  # the group is already empty
            os.killpg(self._popen.pid, sig)

    async def stop(self, clock: Clock, grace: float) -> None:
        """SIGTERM to the group; SIGKILL if its leader is still there after ``grace`` seconds."""
        if not self.running:
            return
        self.kill_group(signal.SIGTERM)
        if not await wait_until(self.exited, clock, grace):
            self.kill_group(signal.SIGKILL)
            await asyncio.shield(self.exited)

    def write_nowait(self, data: bytes) -> bool:
        """Queue ``data`` for its stdin; False once stdin is closed or the process is gone."""
        if self._stdin is None or self._stdin.is_closing() or not self.running:
            return False
        self._stdin.write(data)
        return True

    async def write(self, data: bytes) -> bool:
        """Like write_nowait, then wait while the pipe is full (the process reads slowly)."""
        if not self.write_nowait(data):
            return False
        await self._stdin_flow.writable()
        return not self._stdin.is_closing()

    def close_stdin(self) -> None:
        if self._stdin is not None:
            self._stdin.close()

    def kill(self) -> None:
        """SIGKILL the whole group and let go of its pipes, without waiting (when cancelled)."""
        self.kill_group(signal.SIGKILL)
        self._forget()
        for transport in self._read_transports:
            transport.close()
        self.close_stdin()

    async def finish(self, clock: Clock) -> ExitStatus:
        """Wait for the exit, stop what the process left behind in its group and collect the last
        of its output."""
        status = await asyncio.shield(self.exited)
        self.kill_group(signal.SIGKILL)  # stragglers would keep the pipes open
        self._forget()
        if not await wait_until(self._pipes_closed, clock, PIPE_GRACE_S):
            for transport in self._read_transports:  # held open by a process that left the group
                transport.close()
        self.close_stdin()
        return status

    def _forget(self) -> None:
        """Its group has been ended: the record that lets a restarted node end it goes."""
        ChildTracker.remove(self._record)
        self._record = None


class _PipeReader(asyncio.Protocol):
    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._sink(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _PipeWriter(asyncio.Protocol):
    """Flow control for a stdin pipe: ``writable`` waits while the transport's buffer is full."""

    def __init__(self) -> None:
        self._resumed = asyncio.Event()
        self._resumed.set()

    def pause_writing(self) -> None:
        self._resumed.clear()

    def resume_writing(self) -> None:
        self._resumed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._resumed.set()

    async def writable(self) -> None:
        await self._resumed.wait()


def _reap_in_thread(popen: subprocess.Popen) -> asyncio.Future:
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def settle(status: ExitStatus | None, error: BaseException | None) -> None:
        if exited.done():
            return
        if error is None:
            exited.set_result(status)
        else:
            exited.set_exception(error)

    def reap() -> None:
        try:
            _, wait_status, usage = os.wait4(popen.pid, 0)
            # reaped here: Popen must not wait for it again (set even when the loop is gone)
            popen.returncode = os.waitstatus_to_exitcode(wait_status)
            result = ExitStatus(exit_code=popen.returncode, cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000.0), None
        except ChildProcessError as exc:  # someone else reaped it: the figures are lost
            result = None, exc
        with suppress(RuntimeError):  # the loop is closed: nobody waits for this process any more
            loop.call_soon_threadsafe(settle, *result)

    threading.Thread(target=reap, name=f"cortex-reap-{popen.pid}", daemon=True).start()
    return exited


def _start_error_message(exc: OSError, program: str, cwd: str | None) -> str:
    # subprocess names the cwd as the failing file when chdir, not exec, failed
    if cwd is not None and exc.filename == cwd:
        return f"cannot run in cwd {cwd!r}: {exc.strerror}"
    return f"cannot start {program!r}: {exc.strerror or exc}"


async def wait_until(done: asyncio.Future, clock: Clock, seconds: float | None) -> bool:
    """True when ``done`` completes within ``seconds`` on the clock (None: no limit). It is never
    cancelled here: on False it is still pending."""
    if seconds is None:
        await asyncio.shield(done)
        return True
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({done, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    return done.done()
