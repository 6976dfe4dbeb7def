"""What a node's tier lets others run on it (DESIGN §7).

- root: any command, and a shell when the directive asks for one; any configured agent type.
- sudo: only commands whose program is on ``allowedCommands``, never through a shell.
- unprivileged: no execute_task at all; only agent types marked ``unprivileged`` (safe).

The environment a directive sets (``env`` of execute_task and spawn_agent) is checked against an
ALLOW-list below root: a deny-list cannot be complete (bash imports functions from
``BASH_FUNC_*``, perl runs ``PERL5OPT``/``PERL5DB``, git ``GIT_CONFIG_*``, ...), so an allowed
program could be made to run anything. Below root a directive may set only:

- ``SAFE_ENV_NAMES`` (LANG, LANGUAGE, TZ, TERM, NO_COLOR) and names beginning ``LC_``, whose
  values may not be paths (no leading ``/``, no ``..``): they choose a locale, a time zone, a
  terminal type, never a file;
- names the operator lists (``allowed_env``: ``swarm.allowedEnv``), any value;
- for spawn_agent, the names the agent type accepts (``acceptsEnv`` in settings.agents; the
  built-in ``sim`` accepts CORTEX_SIM_SECONDS), any value.

Names in ``CODE_ENV_NAMES`` / ``CODE_ENV_PREFIXES`` are refused below root even when the operator
or an agent type lists them: each is known to decide which program, library or code runs. That
list is a guard against a careless allow-list, not the defence; the allow-list is. Unprivileged
nodes follow the same rules as sudo nodes (they run no execute_task at all). Root: unchanged,
anything goes.

Placeholders (a tool's ``{name}``, an agent's ``{instruction}``) never let a value become an
option: a value that would begin an argv element with ``-`` is refused (commands.py). A tool or
agent type may opt in with ``"allowOptionValues": true``; only a root node honours that.

The args of an allowed command are not restricted: whoever puts a program on ``allowedCommands``
trusts it with any arguments.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from cortex_node.contracts import NodeTier

if TYPE_CHECKING:
    from cortex_node.kernel.agents import AgentType
    from cortex_node.kernel.commands import CommandSpec

# Kept out of every child's environment: an agent or a command never needs the swarm's secret.
SECRET_ENV = ("CORTEX_SWARM_TOKEN",)

# What a directive may set below root without the operator's say-so.
SAFE_ENV_NAMES = frozenset({"LANG", "LANGUAGE", "TZ", "TERM", "NO_COLOR"})
SAFE_ENV_PREFIXES = ("LC_",)
SAFE_VALUE_MAX = 256

# Refused below root even when listed: each of these decides which program, library or code runs
# (loader, interpreters' startup code and module paths, shells' startup files and imported
# functions, git's config and helper programs, config file locations).
CODE_ENV_NAMES = frozenset({
    "PATH", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH", "GLOBIGNORE",
    "HOME", "ZDOTDIR", "INPUTRC", "TMPDIR", "LOCPATH", "NLSPATH", "GCONV_PATH", "TERMINFO", "TERMINFO_DIRS",
    "HOSTALIASES", "RESOLV_HOST_CONF", "SSL_CERT_FILE", "SSL_CERT_DIR", "OPENSSL_CONF", "OPENSSL_ENGINES",
    "EDITOR", "VISUAL", "PAGER", "MANPAGER", "BROWSER", "LESSOPEN", "LESSCLOSE", "LESSKEY",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "GIT_DIR", "GIT_COMMON_DIR", "GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS",
    "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_PAGER", "GIT_EXTERNAL_DIFF", "GIT_PROXY_COMMAND", "GIT_TEMPLATE_DIR",
    "SUDO_ASKPASS",
})
CODE_ENV_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "PYTHON", "PERL", "RUBY", "GEM_", "BUNDLE_", "NODE_", "NPM_",
                     "LUA_", "TCL", "GIT_CONFIG", "XDG_", "GLIBC_", "MALLOC_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class NotPermitted(Exception):
    """The node's tier forbids the request. ``reason`` is the machine-readable code."""

    reason = "not_permitted"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_execute(tier: NodeTier, allowed_commands: Sequence[str], spec: CommandSpec,
                  allowed_env: Iterable[str] = ()) -> None:
    """Raise NotPermitted unless this node's tier lets the command run. ``allowed_env``: the
    names the operator lets directives set below root (``swarm.allowedEnv``)."""
    if tier is NodeTier.ROOT:
        return
    if tier is NodeTier.UNPRIVILEGED:
        raise NotPermitted("this node's tier is unprivileged: it runs no execute_task directives "
                           "(only agent types marked safe for unprivileged nodes)")
    if spec.shell:
        raise NotPermitted(f"shell: true needs a root node; this node's tier is {tier.value}. "
                           "Send the command as an argv list instead")
    program = spec.argv[0]
    if "/" in program and not os.path.isabs(program):
        raise NotPermitted(f"{program!r} is a relative path; on a sudo node argv[0] must be a program name "
                           "or an absolute path that is on allowedCommands")
    if not _is_allowed(program, allowed_commands):
        listed = ", ".join(allowed_commands) or "(empty)"
        raise NotPermitted(f"{program!r} is not on this sudo node's allowedCommands ({listed}); add it to "
                           "swarm.allowedCommands or send the task to a root node")
    if spec.option_args:
        raise NotPermitted(option_values_refusal(tier, f"tool {spec.tool!r}", spec.option_args[0]))
    check_env(tier, spec.env, allowed_env)


def check_spawn(tier: NodeTier, agent_type: AgentType, env: Mapping[str, str],
                allowed_env: Iterable[str] = ()) -> None:
    """Raise NotPermitted unless this node's tier lets the agent type run with this environment."""
    if tier is NodeTier.UNPRIVILEGED and not agent_type.unprivileged:
        raise NotPermitted(f"agent type {agent_type.name!r} is not marked safe for unprivileged nodes "
                           "(\"unprivileged\": true in settings.agents) and this node's tier is unprivileged")
    check_env(tier, env, (*allowed_env, *agent_type.accepts_env), agent_type=agent_type.name)


def check_env(tier: NodeTier, env: Mapping[str, str], allowed_env: Iterable[str] = (), *,
              agent_type: str | None = None) -> None:
    """Below root, every name must be on the allow-list (see the module docstring)."""
    if tier is NodeTier.ROOT:
        return
    listed = frozenset(allowed_env)
    for name, value in env.items():
        if is_code_env(name):
            raise NotPermitted(f"env may not set {name} on a {tier.value} node: it changes which code runs")
        if not _ENV_NAME.match(name):
            raise NotPermitted(f"env may not set {name!r} on a {tier.value} node: below root a name is letters, "
                               "digits and _")
        if name in listed:
            continue
        if name in SAFE_ENV_NAMES or name.startswith(SAFE_ENV_PREFIXES):
            _check_safe_value(tier, name, value)
            continue
        also = f", the names agent type {agent_type!r} accepts (acceptsEnv)" if agent_type else ""
        raise NotPermitted(
            f"env may not set {name} on a {tier.value} node: below root a directive may set only "
            f"{', '.join(sorted(SAFE_ENV_NAMES))}, LC_*{also} and the names on swarm.allowedEnv")


def is_code_env(name: str) -> bool:
    """A name known to decide which code runs (compared in upper case, to be safe)."""
    return name.upper() in CODE_ENV_NAMES or name.upper().startswith(CODE_ENV_PREFIXES)


def option_values_refusal(tier: NodeTier, what: str, placeholder: str) -> str:
    return (f"{what} lets {{{placeholder}}} begin with '-' (\"allowOptionValues\": true), which only a root "
            f"node honours; this node's tier is {tier.value}")


def check_allowed_env_names(names: Iterable[str]) -> tuple[str, ...]:
    """The operator's list (``swarm.allowedEnv``), checked: plain names, none that runs code.
    Raises ValueError naming the first bad entry (for the config loader)."""
    out = []
    for name in names:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name (letters, digits, _)")
        if is_code_env(name):
            raise ValueError(f"{name} decides which code runs and cannot be allowed below root")
        out.append(name)
    return tuple(out)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment without its secrets, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(extra)
    return env


def _check_safe_value(tier: NodeTier, name: str, value: str) -> None:
    # TZ=:/path and LANG=/path name files the C library then parses; a name is all they need here
    bare = value[1:] if name == "TZ" and value.startswith(":") else value
    if (bare.startswith("/") or ".." in bare or len(value) > SAFE_VALUE_MAX
            or not all(" " <= c <= "~" for c in value)):
        raise NotPermitted(f"env.{name} on a {tier.value} node must be a plain name such as C.UTF-8 or "
                           f"Europe/Paris (printable ASCII, at most {SAFE_VALUE_MAX} characters, not a path: "
                           "no leading '/', no '..'), got {value!r}")


def _is_allowed(program: str, allowed_commands: Sequence[str]) -> bool:
    """Equal names, or a name and a path for the same file on the daemon's PATH."""
    if program in allowed_commands:
        return True
    target = _program_file(program)
    return target is not None and any(_program_file(entry) == target for entry in allowed_commands)


def _program_file(name: str) -> str | None:
    found = shutil.which(name)
    if not found:
        return None
    # Directory symlinks are resolved (/bin -> /usr/bin), the file's own link is not: through a
    # multi-call binary such as busybox every program name would be "the same file".
    directory, base = os.path.split(os.path.abspath(found))
    return os.path.join(os.path.realpath(directory), base)
