"""``GET /metrics`` in the Prometheus text exposition format (prometheus-client conventions:
``cortex_`` prefix, base units, ``_total`` for counters, HELP and TYPE lines). The swarm token
is never part of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cortex_node.swarm.coordinator import Coordinator


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")


async def prometheus_text(c: "Coordinator") -> str:
    nodes = c.list_nodes()
    lines: list[str] = []

    def per_node(get) -> list[tuple[dict[str, str], float]]:
        return [({"node_id": n.id, "node": n.name}, float(get(n))) for n in nodes]

    _metric(lines, "cortex_node_up", "gauge", "1 when the node is up (online, connected, draining or degraded).",
            per_node(lambda n: n.status.is_live))
    _metric(lines, "cortex_node_info", "gauge", "Node facts as labels.",
            [({"node_id": n.id, "node": n.name, "status": n.status.value, "tier": n.tier.value, "group": n.group_name,
               "version": n.version}, 1.0) for n in nodes])
    _metric(lines, "cortex_node_cpu_percent", "gauge", "Host CPU use in percent.", per_node(lambda n: n.metrics.cpu_percent))
    _metric(lines, "cortex_node_memory_used_bytes", "gauge", "Host memory in use.",
            per_node(lambda n: n.metrics.memory_used_mb * 1048576))
    _metric(lines, "cortex_node_memory_total_bytes", "gauge", "Host memory.",
            per_node(lambda n: n.metrics.memory_total_mb * 1048576))
    _metric(lines, "cortex_node_sessions", "gauge", "Active agent sessions.", per_node(lambda n: n.metrics.active_sessions))
    _metric(lines, "cortex_node_processes", "gauge", "Active processes.", per_node(lambda n: n.metrics.active_processes))
    _metric(lines, "cortex_node_heartbeat_age_seconds", "gauge", "Seconds since the node's last heartbeat was received.",
            [({"node_id": n.id, "node": n.name}, n.heartbeat_age_ms / 1000)
             for n in nodes if n.heartbeat_age_ms is not None])
    counts = await c.directive_counts()
    _metric(lines, "cortex_directives_total", "counter", "Directives recorded, by side, kind and status.",
            [({"role": role, "kind": kind, "status": status}, float(n)) for (role, kind, status), n in sorted(counts.items())])
    q = c.queue_figures()
    _metric(lines, "cortex_directive_queue_length", "gauge", "Directives waiting for a worker.", [({}, float(q.queued))])
    _metric(lines, "cortex_directive_running", "gauge", "Directives being run.", [({}, float(q.running))])
    _metric(lines, "cortex_directive_workers", "gauge", "Size of the worker pool.", [({}, float(q.workers))])
    _metric(lines, "cortex_event_loop_lag_seconds", "gauge", "How late the node's event loop ran at its last check.",
            [({}, c.loop_lag_s)])
    _metric(lines, "cortex_event_loop_max_lag_seconds", "gauge", "The longest event-loop stall since start.",
            [({}, c.max_loop_lag_s)])
    _metric(lines, "cortex_remote_processes", "gauge", "Remote processes known, by node.",
            [({"node_id": n.id, "node": n.name}, float(c.remote_process_count(n.id))) for n in nodes if not n.is_self])
    return "\n".join(lines) + "\n"
