"""The `?` screen: every key that works on the screen it was opened from, including the ones
the footer has no room for. Built from the live bindings, so it cannot drift from them."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

NOTES = (
    "Arrows and PgUp/PgDn move, Tab goes to the next panel, Enter folds a tree branch.",
    "A sort key or a click on a column header sorts; the same one again reverses the order.",
    "Ctrl+P opens the command palette.",
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def __init__(self, keys: list[tuple[str, str]], screen_name: str) -> None:
        super().__init__()
        self.keys = keys
        self.screen_name = screen_name

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, description in self.keys:
            table.add_row(key, description)
        with Vertical(classes="dialog help"):
            yield Static(Text(f"Keys: {self.screen_name}"), classes="dialog-title")
            with VerticalScroll():
                yield Static(table)
                yield Static(Text("\n".join(NOTES), style="dim"))
            yield Static(Text("Esc or ? closes", style="dim"))
