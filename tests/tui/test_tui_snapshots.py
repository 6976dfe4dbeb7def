"""Pictures of the three screens over the seeded demo fleet (its clock is fixed, so the same
code always draws the same picture). Update after an intended change with
``pytest tests/tui --snapshot-update`` and review the SVG diff."""

from __future__ import annotations

from textual.pilot import Pilot

from cortex_tui.app import CortexTui
from cortex_tui.client.demo import DemoClient
from cortex_tui.screens.directives import DirectivesScreen
from cortex_tui.screens.node_detail import NodeDetailScreen
from cortex_tui.widgets.directive_table import DirectiveTable
from cortex_tui.widgets.event_list import EventList
from cortex_tui.widgets.resource_sparklines import ResourceSparklines
from tests.support.wait import wait_until

SIZE = (120, 36)


def demo_app() -> CortexTui:
    # A long interval: the first poll is the only one, nothing moves while the picture is taken.
    return CortexTui(DemoClient(), interval_s=3600)


async def fleet_loaded(pilot: Pilot) -> None:
    app = pilot.app
    await wait_until(lambda: app.fleet is not None, what="the demo fleet")
    sparklines = app.screen.query_one(ResourceSparklines)
    # "atlas: last 60 samples (29m30s)", not the "atlas: no samples yet" shown until the series arrives
    await wait_until(lambda: "samples (" in str(sparklines.query_one(".title").content), what="the sparklines")
    await pilot.pause()


def test_fleet_screen(snap_compare) -> None:
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=fleet_loaded)


def test_node_detail_screen(snap_compare) -> None:
    async def open_detail(pilot: Pilot) -> None:
        await fleet_loaded(pilot)
        await pilot.press("down", "down", "enter")  # cygnus: a remote node with remote processes
        screen = pilot.app.screen
        assert isinstance(screen, NodeDetailScreen)
        events = screen.query_one(EventList)
        await wait_until(lambda: "loading" not in str(events.content), what="the node's events")
        await wait_until(lambda: screen.charts_window_ms == screen.window_ms, what="the node's charts")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=open_detail)


def test_directives_screen(snap_compare) -> None:
    async def open_directives(pilot: Pilot) -> None:
        await fleet_loaded(pilot)
        await pilot.press("2")
        screen = pilot.app.screen
        assert isinstance(screen, DirectivesScreen)
        await wait_until(lambda: screen.query_one(DirectiveTable).row_count > 0, what="the directives")
        await pilot.press("down", "down")  # a failed directive: the detail shows its error
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=open_directives)
