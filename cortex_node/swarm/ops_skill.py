"""The ``swarm-ops`` skill: plain-text questions from any A2A client, answered with a readable
summary of the fleet. Commands: status, nodes, report, topology, help."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cortex_node.contracts import REMOTE_PID_BASE

if TYPE_CHECKING:
    from cortex_node.swarm.coordinator import Coordinator

HELP = (
    "swarm-ops understands: status (this node and the fleet in one line each), nodes (every node with "
    "status and load), report (24 h usage), topology (the process tree), help (this text)."
)


async def answer(c: "Coordinator", text: str) -> str:
    words = text.strip().lower().split()
    command = words[0] if words else "help"
    if command == "status":
        me = c.get_node(c.node_id)
        nodes = c.list_nodes()
        up = sum(1 for n in nodes if n.status.is_live)
        q = c.queue_figures()
        return (f"{me.name} ({me.id}) is {me.status.value}: {me.metrics.active_processes} processes, "
                f"cpu {me.metrics.cpu_percent:.0f}%, queue {q.queued} waiting / {q.running} running.\n"
                f"Fleet: {up} of {len(nodes)} nodes up.")
    if command == "nodes":
        lines = [f"{len(c.list_nodes())} node(s):"]
        for n in c.list_nodes():
            m = n.metrics
            lines.append(f"- {n.name} ({n.id}) {n.status.value}, {n.host}:{n.port}, group {n.group_name}, "
                         f"{m.active_processes} proc, cpu {m.cpu_percent:.0f}%, mem {m.memory_used_mb:.0f}/{m.memory_total_mb:.0f} MB")
        return "\n".join(lines)
    if command == "report":
        r = await c.get_resource_report()
        lines = [f"Usage since {r.window_start}: {r.online_nodes}/{r.total_nodes} nodes up, tokens "
                 f"{r.total_tokens_in} in / {r.total_tokens_out} out, ${r.total_cost_usd:.4f}, "
                 f"{r.total_tool_calls} tool calls, {r.total_cpu_ms / 1000:.1f} cpu s."]
        for n in r.per_node:
            lines.append(f"- {n.name}: {n.tokens_in}/{n.tokens_out} tokens, ${n.cost_usd:.4f}")
        return "\n".join(lines)
    if command == "topology":
        topo = c.get_topology()
        lines = []
        for node in topo.nodes:
            lines.append(f"{node.name} ({node.status.value}): {node.process_count} proc, {node.remote_process_count} remote")
            for p in topo.processes:
                if p.node_id == node.id:
                    kind = "remote" if p.pid >= REMOTE_PID_BASE else "local"
                    lines.append(f"  {p.pid} {p.agent_type or p.name} {p.status} ({kind})")
        return "\n".join(lines)
    prefix = "" if command == "help" else f"Unknown command {command!r}. "
    return prefix + HELP
