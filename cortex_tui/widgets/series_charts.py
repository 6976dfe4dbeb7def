"""Plotext charts of one node's snapshot series over a time range (node detail screen)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from cortex_tui.client.models import Snapshot
from cortex_tui.client.series import HOUR_MS, MINUTE_MS, cost, counter_rates, tokens

CHARTS = (("cpu", "CPU %"), ("memory", "Memory GiB"), ("tokens", "Tokens / min"), ("cost", "Cost $ / h"))


class SeriesCharts(Grid):
    DEFAULT_CSS = """
    SeriesCharts { grid-size: 2 2; grid-gutter: 0 1; height: 1fr; }
    SeriesCharts PlotextPlot { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        for key, _ in CHARTS:
            yield PlotextPlot(id=f"chart-{key}")

    def show_series(self, snapshots: Sequence[Snapshot], window_ms: int, now_ms: int) -> None:
        """Plot against time before ``now_ms`` (the node's clock): minutes for short ranges,
        hours for long ones, so the axis reads "how long ago"."""
        unit_ms, unit = (HOUR_MS, "h") if window_ms > 2 * HOUR_MS else (MINUTE_MS, "min")

        def ago(at_ms: int) -> float:
            return (at_ms - now_ms) / unit_ms

        series = {
            "cpu": [(ago(s.at_ms), s.cpu_percent) for s in snapshots],
            "memory": [(ago(s.at_ms), s.memory_used_mb / 1024) for s in snapshots],
            "tokens": [(ago(t), r) for t, r in counter_rates(snapshots, tokens, MINUTE_MS)],
            "cost": [(ago(t), r) for t, r in counter_rates(snapshots, cost, HOUR_MS)],
        }
        for key, title in CHARTS:
            plot = self.query_one(f"#chart-{key}", PlotextPlot)
            plt = plot.plt
            plt.clear_figure()
            points = series[key]
            plt.title(title if points else f"{title}: no samples in this range")
            plt.xlabel(f"{unit} ago")
            plt.xlim(-window_ms / unit_ms, 0)
            if key == "cpu":
                plt.ylim(0, 100)
                plt.yticks([0, 25, 50, 75, 100])
            if points:
                xs, ys = zip(*points)
                if key in ("tokens", "cost"):  # rates: never below zero, and a flat zero is a line at the floor
                    plt.ylim(0, max(ys) * 1.1 or 1)
                plt.plot(xs, ys, marker="braille")
            plot.refresh()
