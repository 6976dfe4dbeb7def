"""The directive audit trail of the connected node, filterable by status, with the payload,
output and error of the selected directive."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from cortex_node.contracts import DirectiveStatus
from cortex_tui import format as fmt
from cortex_tui.client.models import Directive
from cortex_tui.polling import Wants
from cortex_tui.screens.base import DashboardScreen
from cortex_tui.widgets.directive_table import DirectiveTable

STATUS_FILTERS: tuple[str | None, ...] = (None, *(s.value for s in DirectiveStatus))


def _json(value: Any) -> RenderableType:
    """Short documents on one line, longer ones indented."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return Text(repr(value))
    return JSON(text, indent=None if len(text) <= 100 else 2)


def directive_detail(d: Directive, names: dict[str, str]) -> RenderableType:
    m = d.metrics
    facts = Table.grid(padding=(0, 1))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    facts.add_row("directive", Text.assemble((d.directive_id, "bold"), f"  {d.kind}  ",
                                             fmt.styled(d.priority, fmt.PRIORITY_STYLES), "  ",
                                             fmt.styled(d.status, fmt.DIRECTIVE_STATUS_STYLES)))
    facts.add_row("route", Text(f"{names.get(d.source_node_id, d.source_node_id)} → "
                                f"{names.get(d.target_node_id, d.target_node_id)}" + (f"  ({d.role})" if d.role else "")))
    facts.add_row("times", Text(f"created {fmt.clock(d.created_at)}  dispatched {fmt.clock(d.dispatched_at)}  "
                                f"completed {fmt.clock(d.completed_at)}  took {fmt.duration(m.duration_ms)}"))
    facts.add_row("usage", Text(f"{m.tokens_in} tokens in, {m.tokens_out} out, {fmt.money(m.cost_usd)}, "
                                f"{m.tool_calls} tool calls"))
    parts: list[RenderableType] = [facts]
    if d.error:  # first: it is why one looks at a failed directive
        parts += [Text("error", style="bold"), Text(d.error, style="red")]
    if d.output is not None:
        parts += [Text("output", style="bold"), _json(d.output)]
    parts += [Text("payload", style="bold"), _json(d.payload)]
    return Group(*parts)


class DirectivesScreen(DashboardScreen):
    BINDINGS = [
        Binding("escape", "app.show_fleet", "Back"),
        Binding("f", "next_status", "Status filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.status_index = 0

    @property
    def status_filter(self) -> str | None:
        return STATUS_FILTERS[self.status_index]

    def compose_body(self) -> ComposeResult:
        yield Static(id="directives-title", classes="section-title")
        yield DirectiveTable(id="directives")
        with VerticalScroll(id="directive-detail-box"):
            yield Static(Text("no directive selected", style="dim"), id="directive-detail")

    def on_mount(self) -> None:
        self._show_title(None)
        super().on_mount()

    def wants(self) -> Wants:
        return Wants(directives=True, directive_status=self.status_filter)

    def show_directives(self, status: str | None, directives: list[Directive]) -> None:
        if status != self.status_filter:
            return  # an answer for the filter before the last key press
        self.query_one(DirectiveTable).show_directives(directives, self._names())
        self._show_title(len(directives))
        self._show_selected()

    def _names(self) -> dict[str, str]:
        fleet = self.dashboard.fleet
        return {n.id: n.name for n in fleet.nodes} if fleet else {}

    def _show_title(self, shown: int | None) -> None:
        title = Text("Directives   f:")
        for status in STATUS_FILTERS:
            title.append(f" {status or 'all'} ", style="reverse" if status == self.status_filter else "dim")
        if shown is not None:
            title.append(f"   {shown} shown, newest first", style="dim")
        self.query_one("#directives-title", Static).update(title)

    def _show_selected(self) -> None:
        table = self.query_one(DirectiveTable)
        detail = self.query_one("#directive-detail", Static)
        selected = table.selected_directive
        if selected is not None:
            detail.update(directive_detail(selected, self._names()))
        elif table.row_count:
            detail.update(Text("no directive selected", style="dim"))
        else:
            what = f"{self.status_filter} directives" if self.status_filter else "directives"
            detail.update(Text(f"this node has recorded no {what}", style="dim"))

    @on(DataTable.RowHighlighted, "#directives")
    def _selection_moved(self) -> None:
        self._show_selected()

    def action_next_status(self) -> None:
        self.status_index = (self.status_index + 1) % len(STATUS_FILTERS)
        self._show_title(None)
        self.dashboard.fetch_wanted_soon(delay_s=0)
