"""The directive kinds a node runs for others: one module per kind, each a typed payload in and
a typed outcome out. ``query_resources`` is a read, answered by the work queue itself.

A kind is three functions: ``parse`` (payload dict -> typed payload; raises ValueError naming the
field), ``admit`` (tier policy before the directive is queued; raises NotPermitted) and ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from cortex_node.clock import Clock
from cortex_node.config import NodeSettings
from cortex_node.contracts import DirectiveKind, DirectiveResultStatus, RunMetrics, SwarmDirective
from cortex_node.kernel.agents import AgentRuntime
from cortex_node.store.db import Store
from cortex_node.store.messages import MessageRepo
from cortex_node.swarm.state_sync import StateSync


@dataclass
class Outcome:
    status: DirectiveResultStatus
    output: Any = None  # the kind's typed output (a contracts dataclass)
    error: str | None = None
    metrics: RunMetrics = field(default_factory=RunMetrics)


@dataclass
class KindContext:
    """What the kinds may use on this node."""

    node_id: str
    settings: NodeSettings
    clock: Clock
    agents: AgentRuntime
    store: Store
    inbox: MessageRepo
    state: StateSync


@dataclass(frozen=True)
class Kind:
    parse: Callable[[dict[str, Any], KindContext], Any]
    run: Callable[[KindContext, SwarmDirective, Any, float], Awaitable[Outcome]]
    admit: Callable[[Any, KindContext], None] = lambda payload, ctx: None


def queued_kinds() -> dict[DirectiveKind, Kind]:
    """The kinds that go through the work queue, by kind."""
    from cortex_node.swarm.kinds import execute_task, forward_message, spawn_agent, sync_state

    return {
        DirectiveKind.EXECUTE_TASK: execute_task.KIND,
        DirectiveKind.SPAWN_AGENT: spawn_agent.KIND,
        DirectiveKind.FORWARD_MESSAGE: forward_message.KIND,
        DirectiveKind.SYNC_STATE: sync_state.KIND,
    }
