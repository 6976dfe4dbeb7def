"""spawn_agent: start an agent of a configured type; wait for it (or, detached, leave it running
for forward_message). Messages queued for its session are delivered as it starts."""

from __future__ import annotations

import asyncio
from typing import Any

from cortex_node.contracts import (
    DirectiveResultStatus,
    ProcessStatus,
    SpawnAgentOutput,
    SpawnAgentPayload,
    SwarmDirective,
    from_wire,
)
from cortex_node.kernel.agents import RunningAgent
from cortex_node.store.messages import MessageRepo
from cortex_node.swarm.kinds import Kind, KindContext, Outcome

STDERR_REASON_CHARS = 300


def parse(payload: dict[str, Any], ctx: KindContext) -> SpawnAgentPayload:
    return from_wire(SpawnAgentPayload, payload, "payload")  # a WireError is a ValueError naming the field


def admit(p: SpawnAgentPayload, ctx: KindContext) -> None:
    # tier, environment allow-list, option-like instruction, live-agent limit; an unknown type or
    # a malformed value fails when it runs, naming what is allowed
    ctx.agents.admit(p.agent_type, p.instruction, p.env)


async def run(ctx: KindContext, d: SwarmDirective, p: SpawnAgentPayload, timeout: float) -> Outcome:
    agent = await ctx.agents.spawn(p.agent_type, p.instruction, session_id=p.session_id, env=p.env, detach=p.detach)
    ident = SpawnAgentOutput(pid=agent.pid, os_pid=agent.os_pid, agent_id=agent.agent_id,
                             session_id=agent.session_id, agent_type=agent.agent_type, node_id=ctx.node_id)
    await deliver_queued(ctx, agent)
    if p.detach:
        ident.detached = True
        return Outcome(DirectiveResultStatus.COMPLETED, ident)
    try:
        outcome = await agent.wait(timeout)
    except (asyncio.TimeoutError, TimeoutError, asyncio.CancelledError):
        await agent.terminate()
        raise
    m = outcome.metrics
    ident.status, ident.exit_code = ProcessStatus(outcome.status), outcome.exit_code
    ident.output, ident.truncated = outcome.output, outcome.truncated
    ident.cpu_ms, ident.peak_memory_mb = m.cpu_ms, m.peak_memory_mb
    if outcome.status != ProcessStatus.EXITED or outcome.exit_code != 0:
        tail = outcome.stderr.strip().splitlines()[-1:] if outcome.stderr else []
        why = f": {tail[0][:STDERR_REASON_CHARS]}" if tail else ""
        return Outcome(DirectiveResultStatus.FAILED, ident,
                       f"agent {outcome.status} with exit code {outcome.exit_code}{why}", m)
    return Outcome(DirectiveResultStatus.COMPLETED, ident, None, m)


async def deliver_queued(ctx: KindContext, agent: RunningAgent) -> None:
    for msg in await ctx.inbox.queued_for(agent.session_id, agent.agent_id):
        if await agent.send_message(msg.message):
            now = ctx.clock.now_ms()
            await ctx.store.write(lambda conn, m=msg: MessageRepo.mark_delivered(conn, m.id, now))


KIND = Kind(parse=parse, admit=admit, run=run)
