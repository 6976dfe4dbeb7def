"""The node's change feed: node status, heartbeats, directives, processes. ``GET
/api/swarm/events`` streams it (SSE) so monitors need not poll. A slow subscriber loses events
(and is told how many), it never slows the node."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

SUBSCRIBER_BUFFER = 1000


class Subscription:
    def __init__(self, hub: "ChangeFeed") -> None:
        self.hub = hub
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self.dropped = 0

    def close(self) -> None:
        self.hub._subscribers.discard(self)


class ChangeFeed:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        if not self._subscribers:
            return
        event = {"id": next(self._ids), "kind": kind, "data": data}
        for sub in self._subscribers:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
