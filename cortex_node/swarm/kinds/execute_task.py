"""execute_task: a command (argv, a configured tool, or a shell script on root nodes) under the
node's tier policy, killed with its process group at the TTL."""

from __future__ import annotations

from typing import Any

from cortex_node.contracts import DirectiveResultStatus, ExecuteTaskOutput, RunMetrics, SwarmDirective, project
from cortex_node.kernel.commands import CommandSpec, parse_execute_payload, run_command
from cortex_node.kernel.policy import check_execute
from cortex_node.swarm.kinds import Kind, KindContext, Outcome


def parse(payload: dict[str, Any], ctx: KindContext) -> CommandSpec:
    return parse_execute_payload(payload, ctx.settings.tools)


def admit(spec: CommandSpec, ctx: KindContext) -> None:
    check_execute(ctx.settings.tier, ctx.settings.allowed_commands, spec)


async def run(ctx: KindContext, d: SwarmDirective, spec: CommandSpec, timeout: float) -> Outcome:
    admit(spec, ctx)  # the policy is checked again where it matters: right before the command runs
    out = await run_command(spec, timeout=timeout, clock=ctx.clock)
    output = project(ExecuteTaskOutput, out)
    metrics = RunMetrics(duration_ms=out.duration_ms)
    if out.timed_out:
        return Outcome(DirectiveResultStatus.TIMED_OUT, output, f"killed at the TTL of {d.ttl_ms} ms", metrics)
    if out.exit_code != 0:
        return Outcome(DirectiveResultStatus.FAILED, output, f"exit code {out.exit_code}", metrics)
    return Outcome(DirectiveResultStatus.COMPLETED, output, None, metrics)


KIND = Kind(parse=parse, admit=admit, run=run)
