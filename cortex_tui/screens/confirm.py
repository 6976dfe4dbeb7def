"""Confirmations for actions that change the fleet. Cancel has the focus when a dialog opens,
so a reflexive Enter never drains or seals anything; sealing also asks for the node's name."""

from __future__ import annotations

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True only when the confirm button is pressed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, message: str, confirm_label: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text), classes="dialog-title")  # Text: names are not markup
            yield Static(Text(self.message), classes="dialog-message")
            yield from self.compose_extra()
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="error")

    def compose_extra(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)


class SealConfirmScreen(ConfirmScreen):
    """Sealing takes a node out of the swarm until someone restarts it: the operator types the
    node's name, and the Seal button stays disabled until it matches."""

    def __init__(self, node_name: str, message: str) -> None:
        super().__init__(f"Seal {node_name}?", message, "Seal")
        self.node_name = node_name

    def compose_extra(self) -> ComposeResult:
        yield Input(placeholder=f"type {self.node_name} to confirm", id="seal-name", select_on_focus=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#confirm", Button).disabled = True

    @on(Input.Changed, "#seal-name")
    def _name_typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value != self.node_name

    @on(Input.Submitted, "#seal-name")
    def _name_submitted(self, event: Input.Submitted) -> None:
        if event.value == self.node_name:
            self.dismiss(True)

    def on_key(self, event: events.Key) -> None:
        # Typing while a button has the focus goes to the name field: Cancel keeps the
        # focus for Enter, and the operator need not tab to the field first.
        name_field = self.query_one("#seal-name", Input)
        if event.is_printable and event.character and not name_field.has_focus:
            event.stop()
            event.prevent_default()
            name_field.focus()
            name_field.insert_text_at_cursor(event.character)
