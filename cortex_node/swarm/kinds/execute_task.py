"""execute_task: a command (argv, a configured tool, or a shell script on root nodes) under the
node's tier policy, killed with its process group at the TTL. The environment names allowed below
root (swarm.allowedEnv) and the record of live children are the agent runtime's, so that both
kinds of work follow one list and one record."""

from __future__ import annotations

import shlex
from typing import Any

from cortex_node.contracts import DirectiveResultStatus, ExecuteTaskOutput, RunMetrics, SwarmDirective, project
from cortex_node.kernel.commands import CommandSpec, parse_execute_payload, run_command
from cortex_node.kernel.policy import check_execute
from cortex_node.swarm.kinds import Kind, KindContext, Outcome


def parse(payload: dict[str, Any], ctx: KindContext) -> CommandSpec:
    return parse_execute_payload(payload, ctx.settings.tools)


def admit(spec: CommandSpec, ctx: KindContext) -> None:
    check_execute(ctx.settings.tier, ctx.settings.allowed_commands, spec, ctx.agents.allowed_env)


async def run(ctx: KindContext, d: SwarmDirective, spec: CommandSpec, timeout: float) -> Outcome:
    admit(spec, ctx)  # the policy is checked again where it matters: right before the command runs
    argv = ("sh", "-c", spec.shell_script) if spec.shell_script is not None else spec.argv
    out = await run_command(spec, timeout=timeout, clock=ctx.clock, children=ctx.agents.children,
                            what=f"execute_task {d.directive_id}: {shlex.join(argv)}")
    output = project(ExecuteTaskOutput, out)
    metrics = RunMetrics(duration_ms=out.duration_ms)
    if out.timed_out:
        return Outcome(DirectiveResultStatus.TIMED_OUT, output, f"killed at the TTL of {d.ttl_ms} ms", metrics)
    if out.exit_code != 0:
        return Outcome(DirectiveResultStatus.FAILED, output, f"exit code {out.exit_code}", metrics)
    return Outcome(DirectiveResultStatus.COMPLETED, output, None, metrics)


KIND = Kind(parse=parse, admit=admit, run=run)
