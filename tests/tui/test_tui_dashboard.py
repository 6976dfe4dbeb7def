"""The dashboard's behaviour over demo data: refreshes in place, keys, dialogs, errors."""

from __future__ import annotations

import dataclasses

from textual.widgets import Input

from cortex_tui import format as fmt
from cortex_tui.app import CortexTui
from cortex_tui.client.demo import DemoClient, DemoFleet, large_fleet
from cortex_tui.client.models import FleetState, Node
from cortex_tui.client.source import ControlAction, NotFound, Unreachable
from cortex_tui.screens.confirm import ConfirmScreen, SealConfirmScreen
from cortex_tui.screens.directives import DirectivesScreen
from cortex_tui.screens.fleet import FleetScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.screens.node_detail import NodeDetailScreen
from cortex_tui.widgets.connection_banner import ConnectionBanner
from cortex_tui.widgets.directive_table import DirectiveTable
from cortex_tui.widgets.fleet_header import FleetHeader
from cortex_tui.widgets.node_table import NodeTable
from cortex_tui.widgets.process_tree import ProcessTree
from tests.support.wait import wait_until

SIZE = (120, 36)


def demo_app(source: DemoClient | None = None, **kwargs) -> CortexTui:
    return CortexTui(source or DemoClient(), interval_s=3600, **kwargs)


def fleet_screen(app: CortexTui) -> FleetScreen:
    screen = app.screen_stack[0]
    assert isinstance(screen, FleetScreen)
    return screen


async def loaded(app: CortexTui) -> NodeTable:
    await wait_until(lambda: app.fleet is not None, what="the first fleet")
    return fleet_screen(app).query_one(NodeTable)


def column(table: NodeTable, key: str) -> list[str]:
    return [str(table.get_cell(row.key, key)).strip() for row in table.ordered_rows]


async def test_a_refresh_updates_rows_in_place_and_keeps_the_cursor() -> None:
    source = DemoClient()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        tree = fleet_screen(app).query_one(ProcessTree)
        await pilot.press("down", "down", "down")
        selected = table.cursor_key
        branch_before = tree._branches[900_000]
        added: list[object] = []
        table.add_row = lambda *a, **k: added.append(a)  # type: ignore[method-assign]

        source.fleet.advance(30)
        app.apply_fleet(source.fleet.state)
        await pilot.pause()

        assert table.cursor_key == selected and table.cursor_row == 3
        assert added == [], "no row may be added for nodes that stayed"
        assert tree._branches[900_000] is branch_before, "tree nodes are kept, not rebuilt"


async def test_nodes_that_appear_or_disappear_add_or_remove_only_their_rows() -> None:
    source = DemoClient()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        state = source.fleet.state
        newcomer = dataclasses.replace(state.nodes[1], id="node_new", name="aaa-new")
        app.apply_fleet(dataclasses.replace(state, nodes=[*state.nodes[:-1], newcomer]))
        await pilot.pause()
        names = column(table, "name")
        assert names[0] == "aaa-new" and "indus" not in names and len(names) == len(state.nodes)


async def test_filter_narrows_the_table_and_escape_clears_it() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        await pilot.press("slash", *"edge")
        assert column(table, "name") == ["eridani", "fornax", "hydra", "indus"]
        await pilot.press("enter")
        assert app.focused is table
        await pilot.press("slash", "escape")
        assert len(column(table, "name")) == 9 and app.focused is table


async def test_sort_keys_sort_and_the_same_key_reverses() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        await pilot.press("C")
        cpu = [float(v) for v in column(table, "cpu")]
        assert cpu == sorted(cpu)
        await pilot.press("C")
        assert [float(v) for v in column(table, "cpu")] == sorted(cpu, reverse=True)
        await pilot.press("S")
        assert column(table, "status")[0].endswith("disconnected")  # problems first


async def test_pause_and_interval_keys_show_in_the_header() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app)
        header = fleet_screen(app).query_one(FleetHeader)
        await pilot.press("p")
        assert app.link.paused and "paused" in str(header.content)
        await pilot.press("p", "minus")
        assert not app.link.paused and app.link.interval_s == 60
        await pilot.press("plus")
        assert app.link.interval_s == 60  # already the longest


async def test_seal_needs_the_node_name_typed() -> None:
    source = DemoClient()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        await pilot.press("down")  # borealis
        await pilot.press("s")
        await wait_until(lambda: isinstance(app.screen, SealConfirmScreen), what="the seal dialog")
        assert app.focused.id == "cancel"
        await pilot.press(*"borealix", "enter")
        assert isinstance(app.screen, SealConfirmScreen), "a wrong name does not seal"
        await pilot.press("backspace", "s", "enter")
        await wait_until(lambda: "sealed" in column(table, "status")[1], what="the node to be sealed")


async def test_a_remote_control_the_node_cannot_do_is_a_notification() -> None:
    class OlderNode(DemoClient):
        async def control(self, action: ControlAction, node: Node) -> Node:
            raise NotFound(f"{node.name}: cannot {action.value} other nodes; connect to it directly")

    app = demo_app(OlderNode())
    notices: list[tuple[str, str]] = []
    app.notify = lambda message, severity="information", **_: notices.append((message, severity))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app)
        await pilot.press("down", "d")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.click("#confirm")
        await wait_until(lambda: notices, what="a notification")
        assert notices == [("borealis: cannot drain other nodes; connect to it directly", "error")]
        assert app.is_running


async def test_help_lists_the_keys_and_read_only_leaves_out_the_fleet_changing_ones() -> None:
    for read_only in (False, True):
        app = demo_app(read_only=read_only)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(app)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            descriptions = {description for _, description in app.screen.keys}
            assert {"Filter", "Sort by CPU", "Pause", "Directives"} <= descriptions
            assert ("Drain" in descriptions) is not read_only
            await pilot.press("escape")
            assert isinstance(app.screen, FleetScreen)


async def test_node_detail_cycles_its_time_range() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app)
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, NodeDetailScreen)
        await wait_until(lambda: screen.charts_window_ms == 15 * 60_000, what="the 15 min charts")
        await pilot.press("t")
        await wait_until(lambda: screen.charts_window_ms == 3_600_000, what="the 1 h charts")
        await pilot.press("t", "t")
        await wait_until(lambda: screen.charts_window_ms == 15 * 60_000, what="back to 15 min")
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)


async def test_directives_filter_by_status() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app)
        await pilot.press("2")
        screen = app.screen
        assert isinstance(screen, DirectivesScreen)
        table = screen.query_one(DirectiveTable)
        await wait_until(lambda: table.row_count == 24, what="all directives")
        await pilot.press("f", "f", "f", "f")  # all -> pending -> dispatched -> completed -> failed
        assert screen.status_filter == "failed"
        await wait_until(lambda: 0 < table.row_count < 24, what="only failed directives")
        assert {str(table.get_cell(row.key, "status")) for row in table.ordered_rows} == {"failed"}


async def test_a_node_that_never_answers_shows_the_banner_and_the_app_stays() -> None:
    class Down(DemoClient):
        async def fetch_fleet(self) -> FleetState:
            raise Unreachable("no cortex-node answers at http://127.0.0.1:9")

    app = demo_app(Down())
    async with app.run_test(size=SIZE) as pilot:
        banner = fleet_screen(app).query_one(ConnectionBanner)
        await wait_until(lambda: banner.has_class("-visible"), what="the banner")
        assert "retrying in 1 s" in str(banner.content) and "127.0.0.1:9" in str(banner.content)
        await pilot.press("r")
        await wait_until(lambda: "retrying in 2 s" in str(banner.content), what="the next attempt, backed off")
        assert app.is_running


async def test_a_large_fleet_refresh_reuses_every_row_and_tree_node() -> None:
    app = demo_app(DemoClient(DemoFleet.large()))
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        tree = fleet_screen(app).query_one(ProcessTree)
        assert table.row_count == 1000 and len(tree._processes) == 10_000
        rows_before = [row.key for row in table.ordered_rows]
        branches_before = dict(tree._branches)
        app.apply_fleet(large_fleet(tick=1))
        await pilot.pause()
        assert [row.key for row in table.ordered_rows] == rows_before
        assert all(tree._branches[key] is branch for key, branch in branches_before.items())


async def test_labels_under_a_folded_branch_are_current_once_it_is_unfolded() -> None:
    app = demo_app(DemoClient(DemoFleet.large(nodes=50, processes=2000)))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app)
        tree = fleet_screen(app).query_one(ProcessTree)
        later = large_fleet(nodes=50, processes=2000, tick=1)
        process = next(p for p in later.processes
                       if p.pid > 900_000 and p.resources.tokens_in != tree._processes[p.pid].resources.tokens_in)
        group = tree._branches[process.node_id]
        assert not group.is_expanded, "a large fleet starts folded"
        app.apply_fleet(later)
        group.expand()
        await pilot.pause()
        assert fmt.count(process.resources.tokens_in) in tree._branches[process.pid].label.plain


async def test_the_input_of_the_filter_is_hidden_until_asked_for() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app)
        field = fleet_screen(app).query_one("#node-filter", Input)
        assert not field.display
        await pilot.press("slash")
        assert field.display and app.focused is field


async def test_the_command_palette_offers_fleet_changes_only_when_allowed() -> None:
    for read_only in (False, True):
        app = demo_app(read_only=read_only)
        async with app.run_test(size=SIZE):
            await loaded(app)
            titles = {command.title for command in app.get_system_commands(app.screen)}
            assert {"Refresh now", "Show directives"} <= titles
            assert ("Drain atlas" in titles) is not read_only


async def test_names_and_messages_from_the_wire_are_shown_literally_not_as_markup() -> None:
    source = DemoClient()
    state = source.fleet.state
    odd = dataclasses.replace(state.nodes[1], name="[b]x[/] [/y]")
    source.fleet.state = dataclasses.replace(state, nodes=[state.nodes[0], odd, *state.nodes[2:]])
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(app)
        assert "[b]x[/] [/y]" in column(table, "name")
        await pilot.press("down", "enter")
        await wait_until(lambda: isinstance(app.screen, NodeDetailScreen), what="the detail screen")
        await pilot.pause()
        assert app.is_running
