"""A node's recent events, newest first (node detail screen)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from cortex_tui import format as fmt
from cortex_tui.client.models import NodeEvent

EVENT_STYLES = {"disconnected": "red", "sealed": "magenta", "draining": "yellow", "degraded": "dark_orange",
                "recovered": "green", "connected": "green", "undrained": "green"}


class EventList(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(Text("loading events…", style="dim"), **kwargs)

    def show_events(self, events: Sequence[NodeEvent], now_ms: int) -> None:
        """Ages are measured on the node's clock (``now_ms``), like everything else shown."""
        if not events:
            self.update(Text("no events recorded", style="dim"))
            return
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim", no_wrap=True, min_width=10)
        table.add_column(no_wrap=True, min_width=12)
        table.add_column(overflow="ellipsis", no_wrap=True)
        for e in events:
            table.add_row(fmt.ago(e.at, now_ms), Text(e.kind, style=EVENT_STYLES.get(e.kind, "")), Text(e.detail))
        self.update(table)
