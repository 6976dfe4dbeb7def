"""DESIGN §7: what each tier runs for others, and that argv never passes through a shell."""

from __future__ import annotations

import shutil
import sys

import pytest

from cortex_node.clock import SystemClock
from cortex_node.contracts import NodeTier
from cortex_node.kernel.agents import AgentType
from cortex_node.kernel.commands import CommandSpec, parse_execute_payload, run_command
from cortex_node.kernel.policy import (
    NotPermitted,
    check_allowed_env_names,
    check_env,
    check_execute,
    check_spawn,
)

ROOT, SUDO, UNPRIVILEGED = NodeTier.ROOT, NodeTier.SUDO, NodeTier.UNPRIVILEGED
SAFE = AgentType("echo", ("echo",), unprivileged=True)
UNSAFE = AgentType("coder", ("coder",), unprivileged=False)


def spec(command, **kw) -> CommandSpec:
    return parse_execute_payload({"command": command, **kw}, {})


def refused(tier, allowed, s, allowed_env=()) -> str:
    with pytest.raises(NotPermitted) as info:
        check_execute(tier, allowed, s, allowed_env)
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
    # any other name only when the operator lists it (swarm.allowedEnv): the environment is an allow-list
    check_execute(SUDO, ("echo",), spec("echo", env={"GIT_AUTHOR_NAME": "x", "LANG": "C"}), ("GIT_AUTHOR_NAME",))


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
    check_spawn(UNPRIVILEGED, SAFE, {"TOPIC": "x"}, allowed_env=("TOPIC",))  # listed by the operator
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


# --- the environment below root is an allow-list ----------------------------------------------------
# Each of these runs code of the sender's choosing inside an allowed program: bash imports functions
# from BASH_FUNC_*, perl runs PERL5DB under PERL5OPT=-d, git takes aliases (!cmd) from GIT_CONFIG_*,
# node and ruby take startup options, glibc reads tunables. None was on the old deny-list but PATH.
CODE_RUNNING_ENV = [
    {"BASH_FUNC_echo%%": "() { touch /tmp/pwned; }"},
    {"PERL5OPT": "-d", "PERL5DB": "BEGIN{system('touch /tmp/pwned')}"},
    {"PERLLIB": "/tmp"},
    {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "alias.st", "GIT_CONFIG_VALUE_0": "!touch /tmp/pwned"},
    {"GIT_CONFIG_PARAMETERS": "'core.pager'='touch /tmp/pwned'"},
    {"GIT_SSH_COMMAND": "touch /tmp/pwned"},
    {"NODE_OPTIONS": "--require /tmp/evil.js"},
    {"RUBYOPT": "-r/tmp/evil"},
    {"GLIBC_TUNABLES": "glibc.malloc.mxfast=0"},
    {"HOME": "/tmp/evil-home"},  # ~/.gitconfig, ~/.bashrc ... are read from it
    {"XDG_CONFIG_HOME": "/tmp/evil"},
    {"EDITOR": "touch /tmp/pwned"},
    {"OPENSSL_CONF": "/tmp/evil.cnf"},
    {"ld_preload": "/tmp/evil.so"},  # compared in upper case, to be safe
]


@pytest.mark.parametrize("env", CODE_RUNNING_ENV, ids=lambda env: next(iter(env)))
@pytest.mark.parametrize("tier", [SUDO, UNPRIVILEGED])
def test_below_root_no_code_running_name_passes_not_even_when_the_operator_lists_it(env, tier):
    listing_all = AgentType("x", ("x",), unprivileged=True, accepts_env=frozenset(env))
    for allowed in ((), tuple(env)):  # unlisted, and listed by the operator (and accepted by the type)
        if tier is SUDO:
            message = refused(SUDO, ("echo",), spec("echo", env=env), allowed)
        else:
            with pytest.raises(NotPermitted) as info:
                check_spawn(UNPRIVILEGED, listing_all if allowed else SAFE, env, allowed)
            message = info.value.message
        assert message.startswith("env may not set ") and message.endswith(
            f"on a {tier.value} node: it changes which code runs"), message
    check_env(ROOT, env)  # root: unchanged, anything goes


def test_below_root_only_the_safe_names_and_the_listed_ones_pass():
    safe = {"LANG": "C.UTF-8", "LANGUAGE": "en:de", "LC_ALL": "C", "LC_TIME": "de_DE.UTF-8", "TZ": "Europe/Paris",
            "TERM": "xterm-256color", "NO_COLOR": "1"}
    check_execute(SUDO, ("echo",), spec("echo", env=safe))
    check_spawn(UNPRIVILEGED, SAFE, safe)
    assert refused(SUDO, ("echo",), spec("echo", env={"TOPIC": "x"})) == (
        "env may not set TOPIC on a sudo node: below root a directive may set only LANG, LANGUAGE, NO_COLOR, "
        "TERM, TZ, LC_* and the names on swarm.allowedEnv")
    check_execute(SUDO, ("echo",), spec("echo", env={"TOPIC": "x", "LANG": "C"}), ("TOPIC",))
    with pytest.raises(NotPermitted, match=r"the names agent type 'echo' accepts \(acceptsEnv\)"):
        check_spawn(SUDO, SAFE, {"TOPIC": "x"})
    check_spawn(SUDO, AgentType("echo", ("echo",), accepts_env=frozenset({"TOPIC"})), {"TOPIC": "x"})
    with pytest.raises(NotPermitted, match="a name is letters, digits and _"):
        check_spawn(SUDO, SAFE, {"A-B": "x"}, allowed_env=())


@pytest.mark.parametrize("name, value", [("LANG", "/tmp/evil-locale"), ("LC_ALL", "../../tmp/x"),
                                         ("TZ", ":/tmp/evil-zone"), ("TZ", "/etc/../tmp/x"), ("TERM", "x" * 300),
                                         ("LANG", "C\n")])
def test_the_safe_names_take_a_name_never_a_path(name, value):
    message = refused(SUDO, ("echo",), spec("echo", env={name: value}))
    assert message.startswith(f"env.{name} on a sudo node must be a plain name such as C.UTF-8")
    check_execute(SUDO, ("echo",), spec("echo", env={name: value}), (name,))  # listed: the operator's choice


def test_the_operators_list_is_checked():
    assert check_allowed_env_names(["TOPIC", "GIT_AUTHOR_NAME"]) == ("TOPIC", "GIT_AUTHOR_NAME")
    with pytest.raises(ValueError, match="BASH_FUNC_x decides which code runs and cannot be allowed below root"):
        check_allowed_env_names(["BASH_FUNC_x"])
    with pytest.raises(ValueError, match="'A=B' is not an environment variable name"):
        check_allowed_env_names(["A=B"])


BASH_SCRIPT = "#!/bin/bash\necho hello from the allowed script\n"


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
async def test_the_bash_function_escape_is_real_and_refused_below_root(tmp_path):
    """The attack: an allow-listed bash script, and a directive env defining a function named like a
    command the script uses. Run at root (the control) it runs the sender's code; below root the
    directive is refused."""
    script = tmp_path / "hello.sh"
    script.write_text(BASH_SCRIPT)
    script.chmod(0o755)
    pwned = tmp_path / "pwned"
    attack = spec([str(script)], env={"BASH_FUNC_echo%%": f"() {{ touch {pwned}; }}"})
    check_execute(ROOT, (), attack)
    await run_command(attack, timeout=5, clock=SystemClock())
    assert pwned.exists(), "the control: bash imported the function and ran it"
    pwned.unlink()
    assert "BASH_FUNC_echo%% on a sudo node: it changes which code runs" in refused(SUDO, (str(script),), attack)


@pytest.mark.skipif(not shutil.which("perl"), reason="needs perl")
async def test_the_perl_debugger_escape_is_real_and_refused_below_root(tmp_path):
    pwned = tmp_path / "pwned"
    attack = spec(["perl", "-e", "print 1"], env={"PERL5OPT": "-d", "PERL5DB": f"BEGIN{{system('touch {pwned}')}}"})
    await run_command(attack, timeout=5, clock=SystemClock())
    assert pwned.exists(), "the control: perl ran PERL5DB"
    assert "PERL5OPT on a sudo node: it changes which code runs" in refused(SUDO, ("perl",), attack)


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
async def test_the_git_config_escape_is_real_and_refused_below_root(tmp_path):
    pwned = tmp_path / "pwned"
    attack = spec(["git", "st"], env={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "alias.st",
                                      "GIT_CONFIG_VALUE_0": f"!touch {pwned}"}, cwd=str(tmp_path))
    await run_command(attack, timeout=10, clock=SystemClock())
    assert pwned.exists(), "the control: git ran the alias from GIT_CONFIG_*"
    assert "on a sudo node: it changes which code runs" in refused(SUDO, ("git",), attack)


# --- a placeholder value never becomes an option ------------------------------------------------------
SORT_TOOLS = {
    "sort": {"argv": ["sort", "{file}"]},
    "sort-operands": {"argv": ["sort", "--", "{file}"]},
    "sort-opted-in": {"argv": ["sort", "{file}"], "allowOptionValues": True},
}


def test_a_tool_value_that_would_be_an_option_is_refused_naming_the_placeholder():
    with pytest.raises(ValueError) as info:
        parse_execute_payload({"tool": "sort", "args": {"file": "-o/etc/passwd"}}, SORT_TOOLS)
    assert str(info.value).startswith("args.file is '-o/etc/passwd': it begins with '-', and tool 'sort' puts {file} "
                                      "where 'sort' would read it as an option")
    # after a literal '--' it is an operand; inside an element it is never at the start
    assert parse_execute_payload({"tool": "sort-operands", "args": {"file": "-o"}}, SORT_TOOLS).argv == (
        "sort", "--", "-o")
    tools = {"t": {"argv": ["prog", "--out={o}", "{a}{b}"]}}
    assert parse_execute_payload({"tool": "t", "args": {"o": "-x", "a": "v", "b": "-y"}}, tools).argv == (
        "prog", "--out=-x", "v-y")
    with pytest.raises(ValueError, match="args.b is '-y'"):  # an empty value does not hide the next one
        parse_execute_payload({"tool": "t", "args": {"o": "x", "a": "", "b": "-y"}}, tools)
    with pytest.raises(ValueError, match="args.file is '-5'"):
        parse_execute_payload({"tool": "sort", "args": {"file": -5}}, SORT_TOOLS)


def test_the_opt_in_is_honoured_only_on_root():
    opted = parse_execute_payload({"tool": "sort-opted-in", "args": {"file": "-r"}}, SORT_TOOLS)
    assert opted.argv == ("sort", "-r") and opted.option_args == ("file",)
    check_execute(ROOT, (), opted)
    assert refused(SUDO, ("sort",), opted) == (
        "tool 'sort-opted-in' lets {file} begin with '-' (\"allowOptionValues\": true), which only a root node "
        "honours; this node's tier is sudo")
    plain = parse_execute_payload({"tool": "sort-opted-in", "args": {"file": "notes.txt"}}, SORT_TOOLS)
    check_execute(SUDO, ("sort",), plain)  # without an option-like value it is an ordinary tool
    with pytest.raises(ValueError, match="settings.tools.bad.allowOptionValues must be true or false"):
        parse_execute_payload({"tool": "bad", "args": {}}, {"bad": {"argv": ["x"], "allowOptionValues": "yes"}})


async def test_the_sort_attack_writes_a_file_only_where_the_operator_opted_in(tmp_path):
    target = tmp_path / "written-by-sort"
    payload = {"tool": "sort-opted-in", "args": {"file": f"-o{target}"}}
    await run_command(parse_execute_payload(payload, SORT_TOOLS), timeout=5, clock=SystemClock())
    assert target.exists(), "the control: a value that becomes -o makes sort write any file"
    target.unlink()
    with pytest.raises(ValueError, match="args.file"):
        parse_execute_payload({"tool": "sort", "args": {"file": f"-o{target}"}}, SORT_TOOLS)
    assert not target.exists()
