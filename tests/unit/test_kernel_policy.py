"""DESIGN §7: what each tier runs for others, and that argv never passes through a shell."""

from __future__ import annotations

import shutil
import sys

import pytest

from cortex_node.clock import SystemClock
from cortex_node.contracts import NodeTier
from cortex_node.kernel.agents import AgentType
from cortex_node.kernel.commands import CommandSpec, parse_execute_payload, run_command
from cortex_node.kernel.policy import NotPermitted, check_execute, check_spawn

ROOT, SUDO, UNPRIVILEGED = NodeTier.ROOT, NodeTier.SUDO, NodeTier.UNPRIVILEGED
SAFE = AgentType("echo", ("echo",), unprivileged=True)
UNSAFE = AgentType("coder", ("coder",), unprivileged=False)


def spec(command, **kw) -> CommandSpec:
    return parse_execute_payload({"command": command, **kw}, {})


def refused(tier, allowed, s) -> str:
    with pytest.raises(NotPermitted) as info:
        check_execute(tier, allowed, s)
    assert info.value.reason == "not_permitted"
    return info.value.message


def test_root_runs_anything_including_a_shell():
    check_execute(ROOT, (), spec("rm -rf /tmp/whatever"))
    check_execute(ROOT, (), spec("echo $PATH | wc", shell=True))
    check_execute(ROOT, (), spec(["x"], env={"PATH": "/opt/bin", "LD_PRELOAD": "y.so"}))


def test_sudo_runs_only_allowed_programs():
    check_execute(SUDO, ("git", "ls"), spec("git status"))
    message = refused(SUDO, ("git", "ls"), spec("rm -rf /"))
    assert message == ("'rm' is not on this sudo node's allowedCommands (git, ls); add it to "
                       "swarm.allowedCommands or send the task to a root node")
    assert "(empty)" in refused(SUDO, (), spec("ls"))


def test_sudo_matches_a_name_and_the_path_it_resolves_to():
    echo = shutil.which("echo")
    check_execute(SUDO, ("echo",), spec([echo, "hi"]))
    check_execute(SUDO, (echo,), spec("echo hi"))
    refused(SUDO, ("echo",), spec(["/nonexistent/echo"]))


def test_sudo_does_not_take_a_link_to_an_allowed_program_for_it(tmp_path):
    # busybox-style: one file, many names; allowing the file must not allow every name
    target = tmp_path / "tool"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    (tmp_path / "rm").symlink_to(target)
    refused(SUDO, (str(target),), spec([str(tmp_path / "rm")]))


def test_sudo_refuses_relative_paths_a_shell_and_code_loading_env():
    assert "relative path" in refused(SUDO, ("./deploy",), spec("./deploy"))
    assert refused(SUDO, ("echo",), spec("echo hi", shell=True)).startswith(
        "shell: true needs a root node; this node's tier is sudo")
    for name in ("PATH", "LD_PRELOAD", "DYLD_INSERT_LIBRARIES", "PYTHONPATH", "BASH_ENV"):
        assert refused(SUDO, ("echo",), spec("echo", env={name: "x"})) == (
            f"env may not set {name} on a sudo node: it changes which code runs")
    check_execute(SUDO, ("echo",), spec("echo", env={"GIT_AUTHOR_NAME": "x", "LANG": "C"}))


@pytest.mark.parametrize("command", ["ls", "echo $HOME"])
def test_unprivileged_runs_no_execute_task(command):
    message = refused(UNPRIVILEGED, ("ls", "echo"), spec(command, shell=command.startswith("echo")))
    assert message.startswith("this node's tier is unprivileged: it runs no execute_task directives")


def test_unprivileged_refuses_tools_too():
    tool = parse_execute_payload({"tool": "st", "args": {}}, {"st": {"argv": ["git", "status"]}})
    refused(UNPRIVILEGED, ("git",), tool)


def test_spawn_matrix():
    for tier in (ROOT, SUDO):
        check_spawn(tier, UNSAFE, {})
    check_spawn(UNPRIVILEGED, SAFE, {"TOPIC": "x"})
    with pytest.raises(NotPermitted, match="agent type 'coder' is not marked safe for unprivileged nodes"):
        check_spawn(UNPRIVILEGED, UNSAFE, {})
    with pytest.raises(NotPermitted, match="env may not set LD_PRELOAD on a unprivileged node"):
        check_spawn(UNPRIVILEGED, SAFE, {"LD_PRELOAD": "evil.so"})
    check_spawn(ROOT, SAFE, {"LD_PRELOAD": "fine.so"})


# --- no shell unless root asks: the injected command must never run -------------------------------
async def test_argv_injection_never_reaches_a_shell(tmp_path):
    marker = tmp_path / "injected"
    clock = SystemClock()
    injections = [
        {"command": ["echo", f"; touch {marker}"]},
        {"command": f"echo hi; touch {marker}"},
        {"command": f"echo $(touch {marker}) `touch {marker}` && touch {marker}"},
        {"tool": "say", "args": {"what": f"'; touch {marker}; '"}},
    ]
    tools = {"say": {"argv": [sys.executable, "-c", "import sys; print(sys.argv[1])", "{what}"]}}
    for payload in injections:
        s = parse_execute_payload(payload, tools)
        check_execute(SUDO, ("echo", sys.executable), s)
        outcome = await run_command(s, timeout=5, clock=clock)
        assert outcome.exit_code == 0 and "touch" in outcome.stdout
        assert not marker.exists(), f"{payload} ran through a shell"

    # the same text is a command when root asks for a shell: the check above can see it
    await run_command(spec(f"echo hi; touch {marker}", shell=True), timeout=5, clock=clock)
    assert marker.exists()
