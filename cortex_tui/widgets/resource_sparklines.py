"""Four sparklines of one node's recent samples: CPU, memory, token rate, cost rate."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from cortex_tui import format as fmt
from cortex_tui.client.models import Node, Snapshot
from cortex_tui.client.series import HOUR_MS, MINUTE_MS, cost, counter_rates, tokens

ROWS = (("cpu", "CPU"), ("memory", "Memory"), ("tokens", "Tokens"), ("cost", "Cost"))


class ResourceSparklines(Vertical):
    DEFAULT_CSS = """
    ResourceSparklines { height: auto; }
    ResourceSparklines > .title { height: 1; color: $text-muted; }
    ResourceSparklines Horizontal { height: 1; }
    ResourceSparklines .label { width: 7; }
    ResourceSparklines Sparkline { width: 1fr; }
    ResourceSparklines .value { width: 11; text-align: right; }
    """

    def compose(self) -> ComposeResult:
        yield Static("no node selected", classes="title")
        for key, label in ROWS:
            with Horizontal(id=f"spark-{key}"):
                yield Static(label, classes="label")
                yield Sparkline([], id=f"spark-{key}-line")
                yield Static("—", id=f"spark-{key}-value", classes="value")

    def show_series(self, node: Node | None, snapshots: Sequence[Snapshot]) -> None:
        title = self.query_one(".title", Static)
        if node is None:
            title.update("no node selected")
        elif len(snapshots) < 2:
            title.update(Text(f"{node.name}: no samples yet"))
        else:
            span = fmt.age(snapshots[-1].at_ms - snapshots[0].at_ms)
            title.update(Text(f"{node.name}: last {len(snapshots)} samples ({span})"))
        token_rates = [r for _, r in counter_rates(snapshots, tokens, MINUTE_MS)]
        cost_rates = [r for _, r in counter_rates(snapshots, cost, HOUR_MS)]
        latest = snapshots[-1] if snapshots else None
        self._row("cpu", [s.cpu_percent for s in snapshots], f"{latest.cpu_percent:.1f} %" if latest else "—")
        self._row("memory", [s.memory_used_mb for s in snapshots],
                  fmt.memory(latest.memory_used_mb, latest.memory_total_mb) if latest else "—")
        self._row("tokens", token_rates, f"{fmt.count(token_rates[-1])}/min" if token_rates else "—")
        self._row("cost", cost_rates, f"{fmt.money(cost_rates[-1])}/h" if cost_rates else "—")

    def _row(self, key: str, values: list[float], value_text: str) -> None:
        self.query_one(f"#spark-{key}-line", Sparkline).data = values
        self.query_one(f"#spark-{key}-value", Static).update(value_text)
