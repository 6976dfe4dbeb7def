"""forward_message: a message for an agent (by id) or a session, written to the agent's stdin
now, or kept in the inbox until an agent of the session starts."""

from __future__ import annotations

from typing import Any

from cortex_node.contracts import (
    DirectiveResultStatus,
    ForwardMessageOutput,
    ForwardMessagePayload,
    SwarmDirective,
    from_wire,
)
from cortex_node.store.messages import MessageRepo
from cortex_node.swarm.kinds import Kind, KindContext, Outcome


def parse(payload: dict[str, Any], ctx: KindContext) -> ForwardMessagePayload:
    return from_wire(ForwardMessagePayload, payload, "payload")  # a WireError is a ValueError naming the field


async def run(ctx: KindContext, d: SwarmDirective, p: ForwardMessagePayload, timeout: float) -> Outcome:
    by_id = ctx.agents.find_by_agent_id(p.agent_id) if p.agent_id else None
    candidates = [by_id] if by_id else (ctx.agents.find_by_session(p.target_session_id) if p.target_session_id else [])
    delivered_to = []
    for agent in candidates:
        if await agent.send_message({"from": d.source_node_id, "message": p.message}):
            delivered_to.append(agent.pid)
    now = ctx.clock.now_ms()
    msg_id = await ctx.store.write(lambda conn: MessageRepo.add(
        conn, directive_id=d.directive_id, session_id=p.target_session_id, agent_id=p.agent_id,
        source_node_id=d.source_node_id, message=p.message, delivered=bool(delivered_to), now_ms=now))
    return Outcome(DirectiveResultStatus.COMPLETED, ForwardMessageOutput(
        message_id=msg_id, status="delivered" if delivered_to else "queued", delivered_to=delivered_to))


KIND = Kind(parse=parse, run=run)
