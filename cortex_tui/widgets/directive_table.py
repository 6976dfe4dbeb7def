"""The directive audit trail, newest first, updated in place by directive id."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from rich.console import RenderableType
from rich.text import Text

from cortex_tui import format as fmt
from cortex_tui.client.models import Directive
from cortex_tui.widgets.keyed_table import KeyedTable, Values

COLUMNS = (("time", "Time", 8), ("kind", "Kind", 15), ("route", "Source → target", 22), ("priority", "Priority", 8),
           ("status", "Status", 10), ("duration", "Took", 7), ("tokens", "Tokens i/o", 12), ("id", "Id", 19))


def directive_values(d: Directive, names: Mapping[str, str]) -> Values:
    m = d.metrics
    tokens = f"{fmt.count(m.tokens_in)}/{fmt.count(m.tokens_out)}" if m.tokens_in or m.tokens_out else "—"
    route = (names.get(d.source_node_id, d.source_node_id), names.get(d.target_node_id, d.target_node_id))
    return (fmt.clock(d.created_at), d.kind, route, d.priority, d.status, fmt.duration(m.duration_ms), tokens,
            d.directive_id)


class DirectiveTable(KeyedTable):
    DEFAULT_CSS = """
    DirectiveTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._directives: dict[str, Directive] = {}

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def render_cell(self, column: int, value: Hashable) -> RenderableType:
        key = COLUMNS[column][0]
        if key == "route":
            source, target = value
            return Text.assemble(source, (" → ", "dim"), target)
        if key == "priority":
            return fmt.styled(str(value), fmt.PRIORITY_STYLES)
        if key == "status":
            return fmt.styled(str(value), fmt.DIRECTIVE_STATUS_STYLES)
        if key in ("duration", "tokens"):
            return Text(str(value), justify="right")
        if key == "id":
            return Text(str(value), style="dim")
        return super().render_cell(column, value)

    @property
    def selected_directive(self) -> Directive | None:
        key = self.cursor_key
        return self._directives.get(key) if key else None

    def show_directives(self, directives: Sequence[Directive], names: Mapping[str, str]) -> None:
        self._directives = {d.directive_id: d for d in directives}
        self.sync_rows({d.directive_id: directive_values(d, names) for d in directives},
                       [d.directive_id for d in directives])
