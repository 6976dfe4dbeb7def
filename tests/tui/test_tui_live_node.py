"""The dashboard against a real cortex-node process: what it shows, what its keys do to the
node, and how it lives through the node dying and coming back."""

from __future__ import annotations

from cortex_tui.app import CortexTui
from cortex_tui.client.rest import SwarmClient
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.fleet import FleetScreen
from cortex_tui.widgets.connection_banner import ConnectionBanner
from cortex_tui.widgets.node_table import NodeTable
from tests.support.wait import wait_until
from tests.tui.conftest import NodeUnderTest

SIZE = (120, 36)


def dashboard(node: NodeUnderTest, **kwargs) -> CortexTui:
    return CortexTui(SwarmClient(node.url, node.token), interval_s=0.3, stale_after_ms=3000, **kwargs)


def table_of(app: CortexTui) -> NodeTable:
    return app.screen_stack[0].query_one(NodeTable)


async def shows_node(app: CortexTui, node: NodeUnderTest) -> bool:
    selected = table_of(app).selected_node
    return selected is not None and selected.id == node.node_id


async def test_the_table_shows_the_node(tui_node: NodeUnderTest) -> None:
    app = dashboard(tui_node)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: shows_node(app, tui_node), what="the node in the table")
        row = table_of(app).get_row(tui_node.node_id)
        assert "tui-test" in str(row[0])
        assert "online" in str(row[1])
        assert f"127.0.0.1:{tui_node.port}" in str(row[2])
        await pilot.pause()
        assert app.link.connected is True


async def test_drain_after_confirming_drains_the_selected_node(tui_node: NodeUnderTest) -> None:
    app = dashboard(tui_node)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: shows_node(app, tui_node), what="the node in the table")
        await pilot.press("d")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("tab", "enter")  # to the Drain button, and press it

        async def node_drains() -> bool:
            return await tui_node.status() == "draining"

        await wait_until(node_drains, what="the node to drain")
        await wait_until(lambda: "draining" in str(table_of(app).get_row(tui_node.node_id)[1]),
                         what="the table to show it")


async def test_enter_on_the_default_cancel_button_does_not_drain(tui_node: NodeUnderTest) -> None:
    app = dashboard(tui_node)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: shows_node(app, tui_node), what="the node in the table")
        await pilot.press("d")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, FleetScreen), what="the dialog to close")
        assert not [w for w in app.workers if w.group == "control"], "no control request may be sent"
        assert await tui_node.status() == "online"


async def test_read_only_hides_and_blocks_drain(tui_node: NodeUnderTest) -> None:
    app = dashboard(tui_node, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: shows_node(app, tui_node), what="the node in the table")
        assert not {"d", "u", "s"} & app.screen.active_bindings.keys()
        await pilot.press("d", "s")
        await pilot.pause()
        assert isinstance(app.screen, FleetScreen)
        assert await tui_node.status() == "online"


async def test_the_app_survives_the_node_dying_and_shows_it_again_after_a_restart(tui_node: NodeUnderTest) -> None:
    app = dashboard(tui_node)
    notices: list[str] = []
    app.notify = lambda message, **_: notices.append(message)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: shows_node(app, tui_node), what="the node in the table")
        banner = app.screen.query_one(ConnectionBanner)

        tui_node.kill()
        await wait_until(lambda: banner.has_class("-visible"), what="the disconnected banner")
        assert "disconnected" in str(banner.content)
        assert app.is_running
        assert await shows_node(app, tui_node), "the last data stays on screen"

        await tui_node.start()  # same data directory, same port
        await wait_until(lambda: app.link.connected and not banner.has_class("-visible"), timeout=15,
                         what="the connection to come back")
        assert await shows_node(app, tui_node)
        assert any("again" in notice for notice in notices), notices
        await pilot.pause()

