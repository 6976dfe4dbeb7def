"""One node in depth: its facts, recent events, charts of its resource series over a chosen
time range, and its process subtree."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from cortex_node.contracts import SNAPSHOT_RETENTION
from cortex_tui.client.models import FleetState, Node, NodeEvent, Snapshot
from cortex_tui.client.series import HOUR_MS, MINUTE_MS
from cortex_tui.polling import Wants
from cortex_tui.screens.base import NodeControlScreen
from cortex_tui.widgets.event_list import EventList
from cortex_tui.widgets.node_facts import NodeFacts
from cortex_tui.widgets.process_tree import ProcessTree
from cortex_tui.widgets.series_charts import SeriesCharts

TIME_RANGES = ((15 * MINUTE_MS, "15 min"), (HOUR_MS, "1 h"), (12 * HOUR_MS, "12 h"))


class NodeDetailScreen(NodeControlScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "next_range", "Time range"),
    ]

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.range_index = 0
        self.charts_window_ms: int | None = None  # the range the charts show; None until drawn
        self._node: Node | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="detail-body"):
            with Vertical(id="detail-left"):
                yield Static("Node", classes="section-title")
                yield NodeFacts(id="node-facts")
                yield Static("Recent events", classes="section-title")
                yield EventList(id="node-events")
            with Vertical(id="detail-right"):
                yield Static(id="charts-title", classes="section-title")
                yield SeriesCharts(id="node-charts")
                yield Static("Processes", classes="section-title")
                yield ProcessTree(node_id=self.node_id, id="node-processes")

    def on_mount(self) -> None:
        self._show_range_title()
        super().on_mount()

    @property
    def window_ms(self) -> int:
        return TIME_RANGES[self.range_index][0]

    @property
    def selected_node(self) -> Node | None:
        return self._node

    def wants(self) -> Wants:
        return Wants(series_node_id=self.node_id, series_limit=SNAPSHOT_RETENTION, series_window_ms=self.window_ms,
                     events_node_id=self.node_id)

    def show_fleet(self, fleet: FleetState) -> None:
        self._node = next((n for n in fleet.nodes if n.id == self.node_id), None)
        self.query_one(NodeFacts).show(self._node, self.node_id, fleet.server_now_ms, self.dashboard.stale_after_ms)
        self.query_one(ProcessTree).show(fleet.nodes, fleet.processes)
        self.refresh_control_keys()

    def show_series(self, node_id: str, snapshots: list[Snapshot], window_ms: int | None) -> None:
        fleet = self.dashboard.fleet
        if node_id == self.node_id and window_ms == self.window_ms and fleet is not None:
            self.query_one(SeriesCharts).show_series(snapshots, self.window_ms, fleet.server_now_ms)
            self.charts_window_ms = self.window_ms

    def show_events(self, node_id: str, events: list[NodeEvent]) -> None:
        fleet = self.dashboard.fleet
        if node_id == self.node_id and fleet is not None:
            self.query_one(EventList).show_events(events, fleet.server_now_ms)

    def action_next_range(self) -> None:
        self.range_index = (self.range_index + 1) % len(TIME_RANGES)
        self._show_range_title()
        self.dashboard.fetch_wanted_soon(delay_s=0)

    def _show_range_title(self) -> None:
        title = Text(f"Resources over the last {TIME_RANGES[self.range_index][1]}   t:")
        for i, (_, label) in enumerate(TIME_RANGES):
            title.append(f" {label} ", style="reverse" if i == self.range_index else "dim")
        self.query_one("#charts-title", Static).update(title)
