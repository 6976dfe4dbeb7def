"""What every dashboard screen shares: the header, the connection banner, the footer, and the
hooks through which the app hands it data. Screens never fetch; they say what they want
(``wants``) and the app's one polling worker fetches it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from cortex_tui.client.models import Directive, FleetState, Node, NodeEvent, Snapshot
from cortex_tui.client.source import ControlAction
from cortex_tui.polling import Wants
from cortex_tui.widgets.connection_banner import ConnectionBanner
from cortex_tui.widgets.fleet_header import FleetHeader

if TYPE_CHECKING:
    from cortex_tui.app import CortexTui


class DashboardScreen(Screen):
    # False until the widgets exist: the app only hands data to mounted screens, and a screen
    # shows what the app already has when it mounts.
    ready = False

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        yield ConnectionBanner()
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        raise NotImplementedError

    @property
    def dashboard(self) -> "CortexTui":
        return cast("CortexTui", self.app)

    def on_mount(self) -> None:
        """Show what the app already has: a screen opened between two polls is not empty."""
        app = self.dashboard
        self.ready = True
        self.show_link()
        if app.fleet is not None:
            self.show_fleet(app.fleet)
        if app.link.connected is False:
            self.show_connection_lost(app.last_error, app.retry_in_s)

    def on_screen_resume(self) -> None:
        self.dashboard.fetch_wanted_soon()

    # --- hooks the app calls -----------------------------------------------------------------
    def wants(self) -> Wants:
        return Wants()

    def show_link(self) -> None:
        self.query_one(FleetHeader).show(self.dashboard.fleet, self.dashboard.link)

    def show_connection_lost(self, reason: str, retry_in_s: float) -> None:
        self.query_one(ConnectionBanner).show_lost(reason, retry_in_s)
        self.add_class("-disconnected")  # the last data stays, dimmed: it is no longer live

    def show_connection_restored(self) -> None:
        self.query_one(ConnectionBanner).hide()
        self.remove_class("-disconnected")

    def show_fleet(self, fleet: FleetState) -> None:
        """Called on every refresh; must update widgets in place, never rebuild them."""

    def show_series(self, node_id: str, snapshots: list[Snapshot], window_ms: int | None) -> None:
        """A node's snapshot series arrived."""

    def show_events(self, node_id: str, events: list[NodeEvent]) -> None:
        """A node's events arrived."""

    def show_directives(self, status: str | None, directives: list[Directive]) -> None:
        """The directive list arrived."""


class NodeControlScreen(DashboardScreen):
    """A screen with a selected node that drain/undrain/seal act on. In read-only mode the
    keys are hidden and do nothing; a key that would not change the selected node (drain a
    draining one, undrain an active one) is shown disabled."""

    BINDINGS = [
        Binding("d", "control('drain')", "Drain"),
        Binding("u", "control('undrain')", "Undrain"),
        Binding("s", "control('seal')", "Seal"),
    ]

    @property
    def selected_node(self) -> Node | None:
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "control":
            return True
        if self.dashboard.link.read_only:
            return False
        node, wanted = self.selected_node, parameters[0]
        if node is None or node.lifecycle == "sealed":
            return None
        if wanted == "drain" and node.lifecycle == "draining":
            return None
        if wanted == "undrain" and node.lifecycle != "draining":
            return None
        return True

    def refresh_control_keys(self) -> None:
        """Re-evaluate d/u/s only when the selected node or its lifecycle changed: a bindings
        refresh rebuilds the footer, too costly for every poll."""
        node = self.selected_node
        key = (node.id, node.lifecycle) if node else None
        if key != getattr(self, "_control_keys_for", object()):
            self._control_keys_for = key
            self.refresh_bindings()

    def action_control(self, action: str) -> None:
        node = self.selected_node
        if node is not None:
            self.dashboard.request_control(ControlAction(action), node)
