"""cortex-tui: a terminal dashboard of a Cortex Swarm fleet, read through any node's REST API.

One long-lived worker polls (fetch -> post a message -> sleep), so requests never overlap and a
slow node cannot starve the loop; a failure shows a banner and backs off while the last data
stays on screen. Screens say what they want (``Wants``), the worker fetches it, and the message
handlers hand the answers to every dashboard screen, which update their widgets in place.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from functools import partial
from urllib.parse import urlsplit

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer

from cortex_node.contracts import NODE_STALE_MS
from cortex_tui.client.config import ConfigProblem, resolve_connection
from cortex_tui.client.demo import DemoClient
from cortex_tui.client.models import FleetState, Node, Snapshot
from cortex_tui.client.rest import SwarmClient
from cortex_tui.client.source import ControlAction, FleetSource, NotFound, SourceError
from cortex_tui.messages import (
    ConnectionLost,
    ConnectionRestored,
    DirectivesFetched,
    EventsFetched,
    FleetFetched,
    SeriesFetched,
)
from cortex_tui.polling import Backoff, LinkState, Wants
from cortex_tui.screens.base import DashboardScreen, NodeControlScreen
from cortex_tui.screens.confirm import ConfirmScreen, SealConfirmScreen
from cortex_tui.screens.directives import DirectivesScreen
from cortex_tui.screens.fleet import FleetScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.screens.node_detail import NodeDetailScreen
from cortex_tui.widgets.node_table import NodeTable

log = logging.getLogger("cortex.tui")

INTERVAL_STEPS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
RECENT_SERIES_KEPT = 64  # sparkline series cached per node, so moving the cursor shows data at once
SELECTION_SETTLE_S = 0.25
GC_THRESHOLDS = (50_000, 20, 20)  # for the daemon-sized object graphs of a big fleet (see on_mount)  # fetch for a new selection once the cursor stops moving


class CortexTui(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "cortex-tui"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("plus", "slower", "Refresh less often", show=False),
        Binding("minus", "faster", "Refresh more often", show=False),
        Binding("1", "show_fleet", "Fleet", show=False),
        Binding("2", "show_directives", "Directives"),
    ]

    def __init__(self, source: FleetSource, *, interval_s: float = 2.0, read_only: bool = False,
                 stale_after_ms: int = NODE_STALE_MS) -> None:
        super().__init__()
        self.source = source
        self.stale_after_ms = stale_after_ms
        self.link = LinkState(source_label=source.label, interval_s=interval_s, read_only=read_only)
        self.fleet: FleetState | None = None
        self.recent_series: dict[str, list[Snapshot]] = {}
        self.last_error = ""
        self.retry_in_s = 0.0
        self._wake = asyncio.Event()
        self._fleet_wanted = False  # the next cycle fetches the fleet even if it is not due
        self._settle_timer: Timer | None = None

    def get_default_screen(self) -> Screen:
        return FleetScreen()

    def on_mount(self) -> None:
        # A large fleet is a large, long-lived object graph (10,000 tree nodes): with the default
        # thresholds the collector walked it several times per refresh. What exists at start is
        # frozen out of collection, and young collections run less often.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self._poll_forever()

    async def on_unmount(self) -> None:
        await self.source.close()

    # --- the polling worker -----------------------------------------------------------------------
    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll_forever(self) -> None:
        backoff = Backoff()
        fleet: FleetState | None = None
        fetched_at = -math.inf  # monotonic time of the last fleet fetch
        while True:
            self._wake.clear()
            fetch_fleet = (fleet is None or self._fleet_wanted
                           or (not self.link.paused and time.monotonic() >= fetched_at + self.link.interval_s))
            self._fleet_wanted = False
            try:
                if fetch_fleet:
                    fleet = await self.source.fetch_fleet()
                    fetched_at = time.monotonic()
                    self.post_message(FleetFetched(fleet))
                await self._fetch_wanted(self._wants(), fleet)
            except Exception as exc:  # noqa: BLE001 - nothing may end the loop; a bug is reported, not hidden
                if not isinstance(exc, SourceError):
                    log.exception("poll cycle failed")
                reason = str(exc) if isinstance(exc, SourceError) else f"internal error: {exc!r}"
                delay = backoff.next_delay()
                self.post_message(ConnectionLost(reason, delay))
                self._fleet_wanted = True
                await self._nap(delay)
                continue
            if backoff.failures:
                backoff.reset()
                self.post_message(ConnectionRestored())
            # interval and pause are read again after every wake-up, so changes apply at once
            await self._nap(None if self.link.paused else max(0.0, fetched_at + self.link.interval_s - time.monotonic()))

    async def _nap(self, seconds: float | None) -> None:
        """Sleep until the timeout or until something wakes the worker (r, a new selection)."""
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _fetch_wanted(self, wants: Wants, fleet: FleetState | None) -> None:
        try:
            if wants.series_node_id:
                since = None
                if wants.series_window_ms is not None and fleet is not None:
                    since = fleet.server_now_ms - wants.series_window_ms
                snapshots = await self.source.fetch_snapshots(wants.series_node_id, limit=wants.series_limit,
                                                              since_ms=since)
                self.post_message(SeriesFetched(wants.series_node_id, snapshots, wants.series_window_ms))
            if wants.events_node_id:
                events = await self.source.fetch_events(wants.events_node_id)
                self.post_message(EventsFetched(wants.events_node_id, events))
        except NotFound:
            pass  # the node left the fleet between two fetches; the next fleet shows that
        if wants.directives:
            directives = await self.source.fetch_directives(status=wants.directive_status)
            self.post_message(DirectivesFetched(wants.directive_status, directives))

    def fetch_wanted_soon(self, delay_s: float = SELECTION_SETTLE_S) -> None:
        """Fetch what the active screen wants without waiting for the next poll (after
        ``delay_s``, so holding an arrow key does not fire a request per row)."""
        if self._settle_timer is not None:
            self._settle_timer.stop()
            self._settle_timer = None
        if delay_s:
            self._settle_timer = self.set_timer(delay_s, self._wake.set)
        else:
            self._wake.set()

    def _wants(self) -> Wants:
        """What the topmost dashboard screen (under any dialog) shows besides the fleet."""
        screens = self._dashboards()
        return screens[-1].wants() if screens else Wants()

    def _dashboards(self) -> list[DashboardScreen]:
        return [s for s in self.screen_stack if isinstance(s, DashboardScreen) and s.ready]

    # --- data in ----------------------------------------------------------------------------------
    def apply_fleet(self, fleet: FleetState) -> None:
        """Show one fetched fleet state on every open screen. Widgets are updated in place, so
        this is what one refresh costs (the benchmark times it with 1,000 nodes)."""
        self.fleet = fleet
        for screen in self._dashboards():
            screen.show_fleet(fleet)
            screen.show_link()

    def on_fleet_fetched(self, message: FleetFetched) -> None:
        if self.link.connected is None:
            self.link.connected = True
        self.apply_fleet(message.fleet)

    def on_series_fetched(self, message: SeriesFetched) -> None:
        if message.window_ms is None:
            self.recent_series.pop(message.node_id, None)
            self.recent_series[message.node_id] = message.snapshots
            while len(self.recent_series) > RECENT_SERIES_KEPT:
                self.recent_series.pop(next(iter(self.recent_series)))
        for screen in self._dashboards():
            screen.show_series(message.node_id, message.snapshots, message.window_ms)

    def on_events_fetched(self, message: EventsFetched) -> None:
        for screen in self._dashboards():
            screen.show_events(message.node_id, message.events)

    def on_directives_fetched(self, message: DirectivesFetched) -> None:
        for screen in self._dashboards():
            screen.show_directives(message.status, message.directives)

    def on_connection_lost(self, message: ConnectionLost) -> None:
        self.link.connected = False
        self.last_error, self.retry_in_s = message.reason, message.retry_in_s
        for screen in self._dashboards():
            screen.show_connection_lost(message.reason, message.retry_in_s)
            screen.show_link()

    def on_connection_restored(self, _: ConnectionRestored) -> None:
        was_lost = self.link.connected is False
        self.link.connected = True
        for screen in self._dashboards():
            screen.show_connection_restored()
            screen.show_link()
        if was_lost:
            self.notify(f"Connected to {self.source.label} again.", title="Connection back")

    # --- fleet control ----------------------------------------------------------------------------
    def request_control(self, action: ControlAction, node: Node) -> None:
        """Ask for confirmation, then drain, undrain or seal ``node``."""
        if self.link.read_only:
            self.notify("Read-only mode: the fleet cannot be changed from here.", severity="warning")
            return
        if action is ControlAction.SEAL:
            dialog: ConfirmScreen = SealConfirmScreen(
                node.name, f"{node.name} stops taking work, finishes what it has and leaves the swarm until "
                           "it is started again. Type its name to confirm.")
        elif action is ControlAction.DRAIN:
            dialog = ConfirmScreen(f"Drain {node.name}?",
                                   f"{node.name} takes no new work; what it runs now finishes.", "Drain")
        else:
            dialog = ConfirmScreen(f"Undrain {node.name}?", f"{node.name} takes new work again.", "Undrain")
        self.push_screen(dialog, callback=lambda confirmed: self._control(action, node) if confirmed else None)

    @work(group="control", exit_on_error=False)
    async def _control(self, action: ControlAction, node: Node) -> None:
        try:
            updated = await self.source.control(action, node)
        except SourceError as exc:
            self.notify(str(exc), title=f"Could not {action.value} {node.name}", severity="error", timeout=10)
            return
        self.notify(f"{updated.name} is {updated.status}.", title=f"{action.progressive.capitalize()} {node.name}")
        self.action_refresh_now()

    # --- actions ----------------------------------------------------------------------------------
    def action_refresh_now(self) -> None:
        self._fleet_wanted = True
        self._wake.set()

    def action_toggle_pause(self) -> None:
        self.link.paused = not self.link.paused
        for screen in self._dashboards():
            screen.show_link()
        if not self.link.paused:
            self.action_refresh_now()

    def action_slower(self) -> None:
        self._set_interval(next((s for s in INTERVAL_STEPS if s > self.link.interval_s), INTERVAL_STEPS[-1]))

    def action_faster(self) -> None:
        self._set_interval(next((s for s in reversed(INTERVAL_STEPS) if s < self.link.interval_s), INTERVAL_STEPS[0]))

    def _set_interval(self, seconds: float) -> None:
        self.link.interval_s = seconds
        for screen in self._dashboards():
            screen.show_link()
        self._wake.set()  # the worker re-reads the interval
        self.notify(f"Refreshing every {seconds:g} s.", timeout=2)

    def action_show_fleet(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_show_directives(self) -> None:
        if isinstance(self.screen, DirectivesScreen):
            return
        self.action_show_fleet()
        self.push_screen(DirectivesScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, DashboardScreen):  # a dialog is open
            return
        keys = [(self.get_key_display(active.binding), active.binding.description)
                for active in self.screen.active_bindings.values()
                if (active.binding.key, active.binding.action) in _OWN_BINDINGS]
        self.push_screen(HelpScreen(keys, type(self.screen).__name__.removesuffix("Screen")))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Fetch the fleet without waiting for the next poll", self.action_refresh_now)
        yield SystemCommand("Pause or resume", "Stop or restart polling", self.action_toggle_pause)
        yield SystemCommand("Show the fleet", "Nodes, processes and resources", self.action_show_fleet)
        yield SystemCommand("Show directives", "The directive audit trail", self.action_show_directives)
        yield SystemCommand("Keys", "Every key of this screen", self.action_help)
        node = screen.selected_node if isinstance(screen, NodeControlScreen) else None
        if node is not None and not self.link.read_only:
            for action in ControlAction:
                yield SystemCommand(f"{action.value.capitalize()} {node.name}", f"{action.value} the selected node",
                                    partial(self.request_control, action, node))


def _own_bindings() -> set[tuple[str, str]]:
    """(key, action) of every binding cortex-tui defines, for the help screen: the widgets'
    built-in keys (cursor movement, copy, …) would bury the ones that matter."""
    own = set()
    for cls in (CortexTui, FleetScreen, NodeDetailScreen, DirectivesScreen, NodeTable):
        for klass in cls.__mro__:
            if not klass.__module__.startswith("textual"):
                for binding in klass.__dict__.get("BINDINGS", []):
                    own.update((key.strip(), binding.action) for key in binding.key.split(","))
    return own


_OWN_BINDINGS = _own_bindings()


# --- command line ---------------------------------------------------------------------------------
def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.2 and 3600 seconds")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL such as http://127.0.0.1:4220, got {text!r}")
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cortex-tui",
        description="Terminal dashboard of a Cortex Swarm fleet, read through any node's REST API.",
        epilog="example:\n  cortex-tui --url http://10.0.0.5:4220 --token $CORTEX_SWARM_TOKEN --interval 5\n"
               "  cortex-tui --demo            (no node needed)\n\n"
               "Defaults come from $CORTEX_HOME/config.json (section \"swarm\": host, port, token);\n"
               "CORTEX_SWARM_TOKEN overrides the file's token. Press ? in the dashboard for its keys.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", type=_url, help="base URL of a cortex-node [default: from the config, "
                                                 "else http://127.0.0.1:4220]")
    parser.add_argument("--token", help="swarm token [default: CORTEX_SWARM_TOKEN or the config's swarm.token]")
    parser.add_argument("--interval", type=_interval, default=2.0, metavar="SECONDS",
                        help="seconds between refreshes [default: 2]")
    parser.add_argument("--stale-after", type=_interval, default=NODE_STALE_MS / 1000, metavar="SECONDS",
                        help="the fleet's stale limit; heartbeat ages turn yellow at half of it and red at it "
                             "[default: 120]")
    parser.add_argument("--demo", action="store_true", help="show a synthetic fleet instead of a node")
    parser.add_argument("--read-only", action="store_true", help="hide and block drain, undrain and seal")
    parser.add_argument("--theme", metavar="NAME", help="a Textual theme, e.g. nord, gruvbox, textual-light")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.demo:
        source: FleetSource = DemoClient(step_s=args.interval)
    else:
        try:
            url, token = resolve_connection(args.url, args.token)
        except ConfigProblem as exc:
            print(f"cortex-tui: {exc}", file=sys.stderr)
            sys.exit(2)
        source = SwarmClient(url, token)
    app = CortexTui(source, interval_s=args.interval, read_only=args.read_only,
                    stale_after_ms=int(args.stale_after * 1000))
    if args.theme:
        if args.theme not in app.available_themes:
            themes = ", ".join(sorted(app.available_themes))
            print(f"cortex-tui: unknown theme {args.theme!r}; choose one of {themes}", file=sys.stderr)
            sys.exit(2)
        app.theme = args.theme
    app.run()


if __name__ == "__main__":
    main()
