"""What the embedder gives the A2A server: a handler for the work, and the facts for the agent card.

The server owns the protocol (envelope, errors, task bookkeeping, SSE); the handler owns the
meaning of a message. This keeps ``cortex_node.a2a`` free of any swarm import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cortex_node.a2a.tasks import TaskHandle, TaskStore

ExtensionMethod = Callable[[dict[str, Any]], Awaitable[Any]]


class A2AHandler(Protocol):
    async def handle_message(self, message: dict[str, Any], params: dict[str, Any],
                             tasks: TaskStore) -> dict[str, Any] | TaskHandle:
        """message = validated ProtoJSON Message; params = the whole SendMessage params (configuration, metadata).
        Return a ProtoJSON Message dict (a direct reply, role ROLE_AGENT) or a TaskHandle the handler created in
        `tasks` (or an existing one, for a replayed id) and is driving in the background."""

    async def cancel_task(self, handle: TaskHandle) -> None:
        """Stop the work; the server finishes the task CANCELED afterwards if the handler did not."""

    async def load_task(self, task_id: str) -> dict[str, Any] | None:
        """A ProtoJSON Task for an id no longer in memory (e.g. after a restart), or None."""


@dataclass
class AgentCardInfo:
    """The node-specific facts of the agent card; the server adds the protocol's fixed parts.

    ``base_url`` is the absolute URL peers reach this node at (never 0.0.0.0); the JSON-RPC
    endpoint is ``base_url + "/a2a"``. ``skills`` are AgentSkill dicts (id, name, description,
    non-empty tags); ``extensions`` are AgentExtension dicts (uri, description?, required?, params?).
    """

    name: str
    description: str
    version: str
    base_url: str
    skills: list[dict[str, Any]]
    extensions: list[dict[str, Any]]
    bearer_required: bool
    provider_org: str = "Cortex Swarm"
