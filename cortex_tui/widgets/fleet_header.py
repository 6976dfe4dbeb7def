"""The one-line header: which node, how much of the fleet is up, what it costs, and whether
what you see is live."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from cortex_tui import format as fmt
from cortex_tui.client.models import FleetState
from cortex_tui.polling import LinkState


SEPARATOR = ("  │  ", "dim")


def header_text(fleet: FleetState | None, link: LinkState) -> Text:
    me = fleet.self_node if fleet else None
    text = Text(f"{me.name} @ {link.source_label}" if me else link.source_label, style="bold cyan")
    if fleet is not None:
        totals = fleet.totals.usage
        text.append_text(Text.assemble(
            SEPARATOR, (f"{fleet.live_nodes}/{len(fleet.nodes)}", "bold"), " nodes up", SEPARATOR,
            "24h tokens ", (fmt.count(totals.tokens_in), "bold"), " in / ", (fmt.count(totals.tokens_out), "bold"),
            " out  ", (fmt.money(totals.cost_usd), "bold"),
        ))
    text.append(*SEPARATOR)
    if link.connected is None:
        text.append("… connecting", style="yellow")
    elif not link.connected:
        text.append("✖ disconnected", style="bold red")
    elif link.paused:
        text.append("‖ paused", style="bold yellow")
    else:
        text.append(f"● live, every {link.interval_s:g} s", style="green")
    if fleet is not None:  # the node's clock: when the data on screen was true
        text.append(f"  {fmt.clock(fleet.totals.window_end)}Z", style="dim")
    if link.read_only:
        text.append("  read-only ", style="bold reverse")
    return text


class FleetHeader(Static):
    DEFAULT_CSS = """
    FleetHeader { dock: top; height: 1; background: $panel; padding: 0 1; }
    """

    def show(self, fleet: FleetState | None, link: LinkState) -> None:
        self.update(header_text(fleet, link))
