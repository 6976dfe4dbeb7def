"""What one poll cycle fetches besides the fleet, and how long to wait after a failure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wants:
    """The extra data the active screen shows, fetched in the same cycle as the fleet so that
    there is only ever one request sequence in flight."""

    series_node_id: str | None = None
    series_limit: int = 60
    # How far back the series reaches, measured on the node's clock; None: the newest samples.
    series_window_ms: int | None = None
    events_node_id: str | None = None
    directives: bool = False
    directive_status: str | None = None


class Backoff:
    """1, 2, 4, 8, then 10 s between attempts while the node does not answer: short enough that
    a restarted node shows up again soon, long enough not to hammer one that is struggling."""

    def __init__(self, first_s: float = 1.0, max_s: float = 10.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.first_s * 2 ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass
class LinkState:
    """The dashboard's connection, as the header shows it."""

    source_label: str
    interval_s: float
    read_only: bool = False
    connected: bool | None = None  # None until the first answer
    paused: bool = False
