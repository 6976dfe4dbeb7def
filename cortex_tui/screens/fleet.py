"""The fleet at a glance: the node table, the fleet's process tree and the selected node's
recent resource use."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input

from cortex_tui.client.models import FleetState, Node, Snapshot
from cortex_tui.polling import Wants
from cortex_tui.screens.base import NodeControlScreen
from cortex_tui.screens.node_detail import NodeDetailScreen
from cortex_tui.widgets.node_table import NodeTable
from cortex_tui.widgets.process_tree import ProcessTree
from cortex_tui.widgets.resource_sparklines import ResourceSparklines

SPARKLINE_SAMPLES = 60

# Shift+letter sorts by a column, k9s style; the same key again reverses.
SORT_KEYS = (("N", "name", "Sort by name"), ("S", "status", "Sort by status"), ("G", "group", "Sort by group"),
             ("C", "cpu", "Sort by CPU"), ("M", "memory", "Sort by memory"), ("P", "processes", "Sort by processes"),
             ("B", "heartbeat", "Sort by heartbeat age"))


class FleetScreen(NodeControlScreen):
    AUTO_FOCUS = "#nodes"
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        *(Binding(key, f"sort('{column}')", label, show=False) for key, column, label in SORT_KEYS),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="fleet-body"):
            yield Input(placeholder="filter by name, group or status — Enter keeps it, Esc clears", id="node-filter")
            yield NodeTable(id="nodes", stale_after_ms=self.dashboard.stale_after_ms)
            with Horizontal(id="fleet-bottom"):
                yield ProcessTree(id="fleet-processes")
                yield ResourceSparklines(id="selected-series")

    @property
    def table(self) -> NodeTable:
        return self.query_one(NodeTable)

    @property
    def selected_node(self) -> Node | None:
        return self.table.selected_node

    def wants(self) -> Wants:
        node = self.selected_node
        return Wants(series_node_id=node.id if node else None, series_limit=SPARKLINE_SAMPLES)

    def show_fleet(self, fleet: FleetState) -> None:
        self.table.show_nodes(fleet.nodes)
        self.query_one(ProcessTree).show(fleet.nodes, fleet.processes)
        self._show_selected_series()
        self.refresh_control_keys()  # drain/undrain follow the selected node's lifecycle

    def show_series(self, node_id: str, snapshots: list[Snapshot], window_ms: int | None) -> None:
        node = self.selected_node
        if node is not None and node.id == node_id and window_ms is None:
            self.query_one(ResourceSparklines).show_series(node, snapshots)

    def _show_selected_series(self) -> None:
        node = self.selected_node
        cached = self.dashboard.recent_series.get(node.id, []) if node else []
        self.query_one(ResourceSparklines).show_series(node, cached)

    # --- events -----------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#nodes")
    def _selection_moved(self) -> None:
        self._show_selected_series()
        self.refresh_control_keys()
        self.dashboard.fetch_wanted_soon()

    @on(DataTable.RowSelected, "#nodes")
    def _open_selected(self) -> None:
        node = self.selected_node
        if node is not None:
            self.app.push_screen(NodeDetailScreen(node.id))

    @on(Input.Changed, "#node-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)

    @on(Input.Submitted, "#node-filter")
    def _filter_kept(self) -> None:
        self.table.focus()

    # --- actions ----------------------------------------------------------------------------------
    def action_filter(self) -> None:
        field = self.query_one("#node-filter", Input)
        field.add_class("-active")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#node-filter", Input)
        field.value = ""
        field.remove_class("-active")
        self.table.set_filter("")
        self.table.focus()

    def action_sort(self, column: str) -> None:
        self.table.sort_by(column)
