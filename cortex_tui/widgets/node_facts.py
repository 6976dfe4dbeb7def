"""The facts of one node (node detail screen)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from cortex_tui import format as fmt
from cortex_tui.client.models import Node


def facts_table(node: Node, now_ms: int, stale_after_ms: int) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    load, today = node.load, node.today
    rows: list[tuple[str, Text | str]] = [
        ("name", Text.assemble((node.name, "bold"), ("  (this dashboard's node)", "cyan") if node.is_self else "")),
        ("id", node.id),
        ("status", Text.assemble(fmt.node_status(node.status), f"  lifecycle {node.lifecycle}")),
        ("endpoint", node.endpoint or "—"),
        ("tier / group", f"{node.tier or '—'} / {node.group}"),
        ("version", node.version or "—"),
        ("heartbeat", Text.assemble(fmt.heartbeat_age(node.heartbeat_age_ms, stale_after_ms), " ago  ",
                                    (fmt.clock(node.last_heartbeat), "dim"))),
        ("uptime", fmt.age(int(load.uptime_seconds * 1000)) if load.uptime_seconds else "—"),
        ("cpu", f"{load.cpu_percent:.1f} %"),
        ("memory", fmt.memory(load.memory_used_mb, load.memory_total_mb)),
        ("disk", fmt.memory(load.disk_used_mb, load.disk_total_mb)),
        ("work", f"{load.active_sessions} sessions, {load.active_processes} processes"),
        ("24h usage", f"{fmt.count(today.tokens_in)} in / {fmt.count(today.tokens_out)} out, "
                      f"{fmt.money(today.cost_usd)}"),
        ("registered", fmt.ago(node.registered_at, now_ms)),
        ("capabilities", ", ".join(node.capabilities) or "—"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "—"),
        ("boot id", node.boot_id or "—"),
    ]
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(value))  # names and labels are not markup
    return table


class NodeFacts(Static):
    def show(self, node: Node | None, node_id: str, now_ms: int, stale_after_ms: int) -> None:
        if node is None:
            self.update(Text(f"{node_id} is no longer in the fleet", style="yellow"))
        else:
            self.update(facts_table(node, now_ms, stale_after_ms))
