"""The fleet's node table: filterable, sortable by any column, updated in place by node id."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from cortex_tui import format as fmt
from cortex_tui.client.models import Node
from cortex_tui.widgets.keyed_table import KeyedTable, Values


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    sort_value: Callable[[Node], Any]
    right: bool = False


COLUMNS = (
    Column("name", "Name", 12, lambda n: n.name.lower()),
    Column("status", "Status", 14, lambda n: (fmt.NODE_STATUS_RANK.get(n.status, -1), n.name.lower())),
    Column("address", "Host:port", 16, lambda n: n.address),
    Column("tier", "Tier", 6, lambda n: n.tier),
    Column("group", "Group", 7, lambda n: (n.group, n.name.lower())),
    Column("sessions", "Sess", 5, lambda n: n.load.active_sessions, right=True),
    Column("processes", "Proc", 5, lambda n: n.load.active_processes, right=True),
    Column("cpu", "CPU%", 5, lambda n: n.load.cpu_percent, right=True),
    Column("memory", "Memory", 9, lambda n: n.load.memory_used_mb, right=True),
    Column("heartbeat", "Beat", 6, lambda n: math.inf if n.heartbeat_age_ms is None else n.heartbeat_age_ms,
           right=True),
    Column("id", "Id", 19, lambda n: n.id),
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
_TIER_SHORT = {"unprivileged": "unpriv"}
_AGE_STYLES = ("", "yellow", "bold red", "grey50")  # fresh, nearing stale, stale, never heard


def node_values(node: Node, stale_after_ms: int) -> Values:
    """What each column shows, as plain values: cheap to compare across refreshes."""
    age, load = node.heartbeat_age_ms, node.load
    age_level = 3 if age is None else 2 if age >= stale_after_ms else 1 if age >= stale_after_ms / 2 else 0
    return (
        (node.name, node.is_self), node.status, node.address, _TIER_SHORT.get(node.tier, node.tier), node.group,
        str(load.active_sessions), str(load.active_processes), f"{load.cpu_percent:.1f}",
        fmt.memory(load.memory_used_mb, load.memory_total_mb), (fmt.age(age), age_level), node.id,
    )


def fit(content: str, column: Column, style: str = "") -> Text:
    """``column.width`` cells and one gap column after them: the table runs without cell
    padding so that all eleven columns fit a 120-column terminal. Plain string work, as this
    runs for every changed cell of a 1,000-row table."""
    width = column.width
    if cell_len(content) > width:
        content = set_cell_size(content, width - 1) + "…"
    padding = " " * (width - cell_len(content))
    return Text(f"{padding}{content} " if column.right else f"{content}{padding} ", style=style)


def matches(node: Node, terms: Sequence[str]) -> bool:
    """Every term must occur in the node's name, group or status (case-insensitive)."""
    haystack = f"{node.name}\n{node.group}\n{node.status}".lower()
    return all(term in haystack for term in terms)


class NodeTable(KeyedTable):
    """Shows ``Node``s. The cursor row is the selected node of the fleet screen."""

    DEFAULT_CSS = """
    NodeTable { height: 1fr; }
    """
    BINDINGS = [Binding("enter", "select_cursor", "Details")]  # DataTable's own is hidden from the footer

    def __init__(self, *, stale_after_ms: int, **kwargs) -> None:
        super().__init__(cell_padding=0, **kwargs)
        self.stale_after_ms = stale_after_ms
        self.sort_key = "name"
        self.sort_reverse = False
        self._terms: list[str] = []
        self._by_id: dict[str, Node] = {}

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(self._header(column), key=column.key, width=column.width + 1)

    def render_cell(self, column: int, value: Hashable) -> Text:
        key = COLUMNS[column].key
        if key == "id":  # the bare id: KeyedTable orders rows by it
            return Text(str(value), style="dim")
        if key == "name":
            name, is_self = value
            if not is_self:
                return fit(name, COLUMNS[column], "bold")
            cell = fit(f"◆{name}", COLUMNS[column], "bold")  # the node this dashboard is connected to
            cell.stylize("cyan", 0, 1)
            return cell
        if key == "status":
            glyph, style = fmt.NODE_STATUS_STYLES.get(str(value), ("?", "yellow"))
            return fit(f"{glyph} {value}", COLUMNS[column], style)
        if key == "heartbeat":
            age, level = value
            return fit(age, COLUMNS[column], _AGE_STYLES[level])
        return fit(str(value), COLUMNS[column])

    def _header(self, column: Column) -> Text:
        arrow = ("▼" if self.sort_reverse else "▲") if column.key == self.sort_key else ""
        return fit(column.label + arrow, column)

    @property
    def selected_node(self) -> Node | None:
        key = self.cursor_key
        return self._by_id.get(key) if key else None

    def show_nodes(self, nodes: Sequence[Node]) -> None:
        self._by_id = {n.id: n for n in nodes}
        self._render_rows()

    def set_filter(self, text: str) -> None:
        self._terms = text.lower().split()
        self._render_rows()

    def sort_by(self, key: str) -> None:
        """Sort by a column; asking for the current sort column again reverses the order."""
        if key not in COLUMN_BY_KEY:
            return
        self.sort_reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key = key
        for column in COLUMNS:
            self.columns[column.key].label = self._header(column)
        self._render_rows(reorder=True)

    def _render_rows(self, *, reorder: bool = False) -> None:
        visible = [n for n in self._by_id.values() if matches(n, self._terms)]
        visible.sort(key=COLUMN_BY_KEY[self.sort_key].sort_value, reverse=self.sort_reverse)
        self.sync_rows({n.id: node_values(n, self.stale_after_ms) for n in visible}, [n.id for n in visible],
                       reorder=reorder)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(event.column_key.value)
