"""Readable, colour-coded CLI views. Status is always a word as well as a colour, so the output
also reads without colour (pipes, NO_COLOR)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from cortex_node.contracts import REMOTE_PID_BASE, NodeLoad, read_lenient

import sys

# A pipe gets full-width rows (a script greps them); a terminal gets its own width.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 220)

STATUS_STYLE = {
    "online": "bold green", "connected": "green", "draining": "yellow", "degraded": "yellow",
    "disconnected": "bold red", "offline": "red", "sealed": "magenta",
    "running": "green", "exited": "dim", "failed": "red", "killed": "red", "unknown": "yellow",
    "completed": "green", "dispatched": "cyan", "pending": "cyan", "cancelled": "yellow", "timed_out": "red",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def age(ms: int | None) -> str:
    if ms is None:
        return "never"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def mb(used: float, total: float) -> str:
    def one(v: float) -> str:
        return f"{v / 1024:.1f}G" if v >= 1024 else f"{v:.0f}M"
    return f"{one(used)}/{one(total)}"


def nodes_table(doc: dict[str, Any]) -> None:
    table = Table(title=f"{len(doc['nodes'])} node(s)", title_justify="left")
    for col in ("NAME", "ID", "STATUS", "HOST:PORT", "TIER", "GROUP", "SESS", "PROCS", "CPU%", "MEMORY", "HEARTBEAT"):
        table.add_column(col, justify="right" if col in ("SESS", "PROCS", "CPU%") else "left", no_wrap=True)
    for n in doc["nodes"]:
        load = read_lenient(NodeLoad, n.get("metrics"))  # the gauges; a missing one shows 0, not a traceback
        name = n["name"] + (" *" if n.get("isSelf") else "")
        table.add_row(
            name, n["id"], status_text(n["status"]), f"{n.get('host')}:{n.get('port')}", n["tier"], n["groupName"],
            str(load.active_sessions), str(load.active_processes), f"{load.cpu_percent:.1f}",
            mb(load.memory_used_mb, load.memory_total_mb), age(n.get("heartbeatAgeMs")),
        )
    console.print(table)
    console.print("* = the node answering", style="dim")


def report_table(doc: dict[str, Any]) -> None:
    table = Table(title=f"Usage {doc['windowStart']} .. {doc['windowEnd']}", title_justify="left")
    for col in ("NODE", "STATUS", "TOKENS IN", "TOKENS OUT", "COST $", "TOOL CALLS", "CPU s", "PEAK MEM"):
        table.add_column(col, justify="left" if col in ("NODE", "STATUS") else "right", no_wrap=True)
    for n in doc["perNode"]:
        table.add_row(n["name"], status_text(n["status"]), f"{n['tokensIn']:,}", f"{n['tokensOut']:,}",
                      f"{n['costUsd']:.4f}", f"{n['toolCalls']:,}", f"{n['cpuMs'] / 1000:.1f}",
                      f"{n['peakMemoryMb']:.0f}M")
    table.add_section()
    table.add_row(Text("TOTAL", style="bold"), f"{doc['onlineNodes']}/{doc['totalNodes']} up",
                  f"{doc['totalTokensIn']:,}", f"{doc['totalTokensOut']:,}", f"{doc['totalCostUsd']:.4f}",
                  f"{doc['totalToolCalls']:,}", f"{doc['totalCpuMs'] / 1000:.1f}", f"{doc['totalPeakMemoryMb']:.0f}M")
    console.print(table)


def _proc_label(p: dict[str, Any]) -> Text:
    label = Text(f"{p['pid']:>6} ", style="bold cyan" if p["pid"] >= REMOTE_PID_BASE else "bold")
    label.append(p.get("agentType") or p["name"])
    label.append(" ")
    label.append_text(status_text(p["status"]))
    extras = []
    if p.get("sessionId"):
        extras.append(f"session {p['sessionId']}")
    r = p.get("resources") or {}
    if r.get("tokensIn") or r.get("tokensOut"):
        extras.append(f"tokens {r.get('tokensIn', 0)}/{r.get('tokensOut', 0)}")
    if extras:
        label.append("  " + "  ".join(extras), style="dim")
    return label


def topology_tree(doc: dict[str, Any]) -> None:
    root = Tree(Text("swarm", style="bold"))
    procs = doc["processes"]
    for node in doc["nodes"]:
        head = Text(f"{node['name']} ", style="bold")
        head.append(node["id"], style="dim")
        head.append(" ")
        head.append_text(status_text(node["status"]))
        head.append(f"  {node['processCount']} proc, {node['remoteProcessCount']} remote", style="dim")
        branch = root.add(head)
        mine = [p for p in procs if p["nodeId"] == node["id"]]
        pids = {p["pid"] for p in mine}
        children: dict[Any, list] = {}
        for p in mine:
            parent = p.get("parentPid") if p.get("parentPid") in pids else None
            children.setdefault(parent, []).append(p)

        def add(tree: Tree, parent: Any) -> None:
            for p in sorted(children.get(parent, []), key=lambda q: q["pid"]):
                add(tree.add(_proc_label(p)), p["pid"])

        add(branch, None)
    console.print(root)


def directives_table(doc: dict[str, Any]) -> None:
    rows = doc["directives"]
    if not rows:
        console.print("no directives yet")
        return
    table = Table(title=f"{len(rows)} directive(s), newest first", title_justify="left")
    for col in ("CREATED", "ID", "KIND", "SOURCE -> TARGET", "PRIO", "STATUS", "MS", "TOKENS"):
        table.add_column(col, no_wrap=True)
    for d in rows:
        table.add_row(d["createdAt"], d["directiveId"], d["kind"], f"{d['sourceNodeId']} -> {d['targetNodeId']}",
                      d["priority"], status_text(d["status"]), str(d["durationMs"]),
                      f"{d['tokensIn']}/{d['tokensOut']}")
    console.print(table)


def control_result(action: str, node: dict[str, Any]) -> None:
    line = Text(f"{node['name']} ({node['id']}) is now ")
    line.append_text(status_text(node["status"]))
    if action == "seal":
        line.append(": the daemon finishes in-flight work and exits")
    console.print(line)


def directive_results(rows: list[dict[str, Any]]) -> None:
    for d in rows:
        line = Text(f"{d['directiveId']} {d['kind']} -> {d['targetNodeId']}: ")
        line.append_text(status_text(d["status"]))
        if d.get("durationMs"):
            line.append(f" in {d['durationMs']} ms", style="dim")
        console.print(line)
        if d.get("error"):
            console.print(Text(f"  error: {d['error']}", style="red"))
        out = d.get("output")
        if isinstance(out, dict) and ("stdout" in out or "output" in out):
            text = out.get("stdout") if "stdout" in out else out.get("output")
            if text:
                console.print(text.rstrip(), markup=False, highlight=False)
        elif out is not None:
            console.print_json(data=out)
