"""The interface the dashboard reads the fleet through, and the errors it may raise.

Two implementations: ``rest.SwarmClient`` (a real node over HTTP) and ``demo.DemoClient``
(seeded synthetic data). Every failure is a ``SourceError`` whose message is one line an
operator can act on; the dashboard shows it and never a traceback.
"""

from __future__ import annotations

import enum
from typing import Protocol

from cortex_tui.client.models import Directive, FleetState, Node, NodeEvent, Snapshot


class SourceError(Exception):
    """Base of every failure a source reports."""


class Unreachable(SourceError):
    """No answer: refused, reset, timed out, DNS."""


class Unauthorized(SourceError):
    """401: missing or wrong swarm token."""


class NotFound(SourceError):
    """404: unknown node, or a route this node does not have yet."""


class RequestFailed(SourceError):
    """Any other non-2xx answer, or a body that is not the expected document."""


class ControlAction(str, enum.Enum):
    DRAIN = "drain"
    UNDRAIN = "undrain"
    SEAL = "seal"

    @property
    def progressive(self) -> str:
        return {"drain": "draining", "undrain": "undraining", "seal": "sealing"}[self.value]


class FleetSource(Protocol):
    """Where fleet data comes from. ``label`` names it in the header ("demo", a URL)."""

    label: str

    async def fetch_fleet(self) -> FleetState: ...

    async def fetch_snapshots(self, node_id: str, *, limit: int, since_ms: int | None = None) -> list[Snapshot]: ...

    async def fetch_events(self, node_id: str, *, limit: int = 50) -> list[NodeEvent]: ...

    async def fetch_directives(self, *, status: str | None = None, limit: int = 200) -> list[Directive]: ...

    async def control(self, action: ControlAction, node: Node) -> Node: ...

    async def close(self) -> None: ...
