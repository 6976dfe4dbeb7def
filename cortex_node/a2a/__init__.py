"""A2A 1.0 (JSON-RPC over HTTP): wire shapes, task store, the aiohttp server and a peer client.

Depends only on ``cortex_node.contracts`` and ``cortex_node.clock``; the embedder supplies an
``A2AHandler`` for the work and an ``AgentCardInfo`` for the card.
"""

from cortex_node.a2a.client import A2AClient, PeerUnreachable, jsonrpc_url, normalize_base_url
from cortex_node.a2a.errors import A2AError
from cortex_node.a2a.handler import A2AHandler, AgentCardInfo
from cortex_node.a2a.server import A2AServer, build_agent_card
from cortex_node.a2a.tasks import TaskHandle, TaskStore

__all__ = [
    "A2AClient", "A2AError", "A2AHandler", "A2AServer", "AgentCardInfo", "PeerUnreachable", "TaskHandle",
    "TaskStore", "build_agent_card", "jsonrpc_url", "normalize_base_url",
]
