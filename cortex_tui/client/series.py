"""Turning a node's snapshot series into what the charts plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cortex_tui.client.models import Snapshot

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


def counter_rates(snapshots: Sequence[Snapshot], counter: Callable[[Snapshot], float],
                  per_ms: float) -> list[tuple[int, float]]:
    """(time, rate) between consecutive samples of a cumulative counter, like Prometheus
    ``rate()``: a drop means the node restarted and the new value counts in full."""
    rates = []
    for prev, cur in zip(snapshots, snapshots[1:]):
        elapsed = cur.at_ms - prev.at_ms
        if elapsed <= 0:
            continue
        a, b = counter(prev), counter(cur)
        increase = b - a if b >= a else b
        rates.append((cur.at_ms, increase * per_ms / elapsed))
    return rates


def tokens(s: Snapshot) -> float:
    return s.tokens_in + s.tokens_out


def cost(s: Snapshot) -> float:
    return s.cost_usd

