"""Messages the polling worker posts to the app; handlers on the app hand the data to screens."""

from __future__ import annotations

from textual.message import Message

from cortex_tui.client.models import Directive, FleetState, NodeEvent, Snapshot


class FleetFetched(Message):
    def __init__(self, fleet: FleetState) -> None:
        super().__init__()
        self.fleet = fleet


class SeriesFetched(Message):
    def __init__(self, node_id: str, snapshots: list[Snapshot], window_ms: int | None) -> None:
        super().__init__()
        self.node_id = node_id
        self.snapshots = snapshots
        self.window_ms = window_ms


class EventsFetched(Message):
    def __init__(self, node_id: str, events: list[NodeEvent]) -> None:
        super().__init__()
        self.node_id = node_id
        self.events = events


class DirectivesFetched(Message):
    def __init__(self, status: str | None, directives: list[Directive]) -> None:
        super().__init__()
        self.status = status
        self.directives = directives


class ConnectionLost(Message):
    def __init__(self, reason: str, retry_in_s: float) -> None:
        super().__init__()
        self.reason = reason
        self.retry_in_s = retry_in_s


class ConnectionRestored(Message):
    pass
