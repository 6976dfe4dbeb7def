"""What a node's tier lets others run on it (DESIGN §7).

- root: any command, and a shell when the directive asks for one; any configured agent type.
- sudo: only commands whose program is on ``allowedCommands``, never through a shell.
- unprivileged: no execute_task at all; only agent types marked ``unprivileged`` (safe).

Below root, a directive may not set the environment variables that decide which program or
library code runs (PATH, the dynamic loader's, Python's): with them an allowed program could be
made to run anything. The args of an allowed command are not restricted: whoever puts a program
on ``allowedCommands`` trusts it with any arguments.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Mapping, Sequence

from cortex_node.contracts import NodeTier

if TYPE_CHECKING:
    from cortex_node.kernel.agents import AgentType
    from cortex_node.kernel.commands import CommandSpec

# Kept out of every child's environment: an agent or a command never needs the swarm's secret.
SECRET_ENV = ("CORTEX_SWARM_TOKEN",)

_CODE_ENV_NAMES = frozenset({"PATH", "BASH_ENV", "ENV"})
_CODE_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON")


class NotPermitted(Exception):
    """The node's tier forbids the request. ``reason`` is the machine-readable code."""

    reason = "not_permitted"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_execute(tier: NodeTier, allowed_commands: Sequence[str], spec: CommandSpec) -> None:
    """Raise NotPermitted unless this node's tier lets the command run."""
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
    check_env(tier, spec.env)


def check_spawn(tier: NodeTier, agent_type: AgentType, env: Mapping[str, str]) -> None:
    """Raise NotPermitted unless this node's tier lets the agent type run with this environment."""
    if tier is NodeTier.UNPRIVILEGED and not agent_type.unprivileged:
        raise NotPermitted(f"agent type {agent_type.name!r} is not marked safe for unprivileged nodes "
                           "(\"unprivileged\": true in settings.agents) and this node's tier is unprivileged")
    check_env(tier, env)


def check_env(tier: NodeTier, env: Mapping[str, str]) -> None:
    if tier is NodeTier.ROOT:
        return
    for name in env:
        if name in _CODE_ENV_NAMES or name.startswith(_CODE_ENV_PREFIXES):
            raise NotPermitted(f"env may not set {name} on a {tier.value} node: it changes which code runs")


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment without its secrets, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(extra)
    return env


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
