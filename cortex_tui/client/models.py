"""What the dashboard knows about the fleet, parsed from the node's camelCase JSON.

Parsing is tolerant on purpose: a field a newer or older node leaves out gets a neutral default
instead of taking the dashboard down, and only a document that is not the expected shape at all
raises ``BadAnswer``. The figures are the contracts' own types (``Usage``, ``RunMetrics``,
``NodeLoad``, the series ``Snapshot``), read the way ``contracts.read_lenient`` reads them; the fleet
models are slotted because a large fleet parses 10,000 processes on every refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from cortex_node.contracts import (
    REMOTE_PID_BASE,
    NodeLoad,
    NodeStatus,
    RunMetrics,
    Usage,
    lenient_reader,
    parse_ts,
)
from cortex_node.contracts import Snapshot as NodeSample

T = TypeVar("T")


class BadAnswer(ValueError):
    """The node answered, but not with the document the dashboard expects."""


def _obj(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadAnswer(f"expected {what} to be a JSON object, got {type(doc).__name__}")
    return doc


def _list(doc: dict[str, Any], key: str, what: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise BadAnswer(f"expected {what} to have a list '{key}'")
    return value


def _num(value: Any, default: float = 0.0) -> float:
    t = type(value)
    if t is float:
        return value if value - value == 0 else default
    return float(value) if t is int else default


def _int(value: Any, default: int = 0) -> int:
    t = type(value)
    if t is int:
        return value
    return int(value) if t is float and value - value == 0 else default


def _opt_int(value: Any) -> int | None:
    t = type(value)
    if t is int:
        return value
    return int(value) if t is float and value - value == 0 else None


def _str(value: Any, default: str = "") -> str:
    return value if type(value) is str else default


def _opt_str(value: Any) -> str | None:
    return value if type(value) is str else None


def ts_ms(text: str | None) -> int | None:
    """ISO timestamp -> epoch ms, None when absent or unreadable (never raises)."""
    if not text:
        return None
    try:
        return parse_ts(text)
    except (ValueError, OverflowError):
        return None


read_usage = lenient_reader(Usage)
read_load = lenient_reader(NodeLoad)
read_run_metrics = lenient_reader(RunMetrics)
read_totals = lenient_reader(Usage, "total")  # the fleet report's totalTokensIn, totalCostUsd, …

_NODE_STATUS = {s.value: s for s in NodeStatus}


def is_live(status: str) -> bool:
    """``NodeStatus.is_live`` of a status word from the wire (counted "up" in the header); a word
    this version does not know is not live."""
    known = _NODE_STATUS.get(status)
    return known is not None and known.is_live


@dataclass(slots=True)
class Node:
    id: str
    name: str
    status: str
    lifecycle: str = "active"
    is_self: bool = False
    endpoint: str = ""
    host: str | None = None
    port: int | None = None
    tier: str = ""
    group: str = "default"
    version: str = ""
    capabilities: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    boot_id: str | None = None
    load: NodeLoad = field(default_factory=NodeLoad)  # the gauges of the last heartbeat
    today: Usage = field(default_factory=Usage)  # what the node used since UTC midnight
    last_heartbeat: str | None = None
    heartbeat_age_ms: int | None = None
    registered_at: str | None = None

    @property
    def address(self) -> str:
        if self.host and self.port:
            return f"{self.host}:{self.port}"
        return self.endpoint.split("://", 1)[-1] or "—"

    @property
    def is_live(self) -> bool:
        return is_live(self.status)

    @classmethod
    def from_json(cls, doc: Any) -> "Node":
        d = _obj(doc, "a node")
        if not isinstance(d.get("id"), str):
            raise BadAnswer("a node without an 'id'")
        m = d.get("metrics") if isinstance(d.get("metrics"), dict) else {}
        caps = d.get("capabilities")
        labels = d.get("labels")
        return cls(
            id=d["id"], name=_str(d.get("name"), d["id"]), status=_str(d.get("status"), "unknown"),
            lifecycle=_str(d.get("lifecycle"), "active"), is_self=d.get("isSelf") is True,
            endpoint=_str(d.get("endpoint")), host=_opt_str(d.get("host")), port=_opt_int(d.get("port")),
            tier=_str(d.get("tier")), group=_str(d.get("groupName"), "default"), version=_str(d.get("version")),
            capabilities=tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else (),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            boot_id=_opt_str(d.get("bootId")), load=read_load(m), today=_today(m),
            last_heartbeat=_opt_str(d.get("lastHeartbeat")), heartbeat_age_ms=_opt_int(d.get("heartbeatAgeMs")),
            registered_at=_opt_str(d.get("registeredAt")),
        )


def _today(metrics: dict[str, Any]) -> Usage:
    """The day's usage: ``metrics.today``; a node from before the one usage vector sent three
    flat figures instead, which are still shown."""
    today = metrics.get("today")
    if isinstance(today, dict) or "tokensUsedToday" not in metrics:
        return read_usage(today)
    return Usage(tokens_in=_int(metrics.get("tokensUsedToday")), tokens_out=_int(metrics.get("tokensOutToday")),
                 cost_usd=_num(metrics.get("costUsdToday")))


@dataclass(slots=True)
class Process:
    """One entry of the connected node's process tree; remote processes have pid >= 900000."""

    pid: int
    parent_pid: int | None
    name: str
    status: str
    node_id: str
    role: str = ""
    agent_type: str | None = None
    session_id: str | None = None
    remote_pid: int | None = None
    resources: Usage = field(default_factory=Usage)

    @property
    def is_remote(self) -> bool:
        return self.pid >= REMOTE_PID_BASE

    @classmethod
    def from_json(cls, doc: Any) -> "Process":
        get = _obj(doc, "a process").get
        pid = _opt_int(get("pid"))
        if pid is None:
            raise BadAnswer("a process without a 'pid'")
        return cls(
            pid=pid, parent_pid=_opt_int(get("parentPid")), name=_str(get("name"), "?"),
            status=_str(get("status"), "unknown"), node_id=_str(get("nodeId")), role=_str(get("role")),
            agent_type=_opt_str(get("agentType")), session_id=_opt_str(get("sessionId")),
            remote_pid=_opt_int(get("remotePid")), resources=read_usage(get("resources")),
        )


@dataclass(slots=True)
class FleetTotals:
    """The fleet report's totals over its window (24 h)."""

    window_end: str
    usage: Usage = field(default_factory=Usage)

    @classmethod
    def from_json(cls, doc: Any) -> "FleetTotals":
        d = _obj(doc, "the fleet report")
        if not isinstance(d.get("windowEnd"), str):
            raise BadAnswer("the fleet report has no 'windowEnd'")
        return cls(window_end=d["windowEnd"], usage=read_totals(d))


@dataclass(slots=True)
class FleetState:
    """Everything one refresh of the fleet screen shows."""

    self_id: str
    nodes: list[Node]
    processes: list[Process]
    totals: FleetTotals
    # The node's clock at the time of the answer: time ranges are measured on it, so a TUI on a
    # machine with a skewed clock still asks for the right window.
    server_now_ms: int

    @property
    def self_node(self) -> Node | None:
        return next((n for n in self.nodes if n.id == self.self_id), None)

    @property
    def live_nodes(self) -> int:
        return sum(1 for n in self.nodes if n.is_live)

    @classmethod
    def from_json(cls, nodes_doc: Any, topology_doc: Any, report_doc: Any) -> "FleetState":
        nodes_d = _obj(nodes_doc, "the node list")
        topo_d = _obj(topology_doc, "the topology")
        totals = FleetTotals.from_json(report_doc)
        return cls(
            self_id=_str(nodes_d.get("selfId")),
            nodes=[Node.from_json(n) for n in _list(nodes_d, "nodes", "the node list")],
            processes=[Process.from_json(p) for p in _list(topo_d, "processes", "the topology")],
            totals=totals,
            server_now_ms=ts_ms(totals.window_end) or 0,
        )


_read_sample = lenient_reader(NodeSample)


@dataclass(kw_only=True)
class Snapshot(NodeSample):
    """One sample of a node's resource series: the contracts' ``Snapshot`` (usage counters,
    cumulative since the node started, and the load then) at ``at_ms``."""

    at_ms: int

    @classmethod
    def from_json(cls, doc: Any) -> "Snapshot":
        d = _obj(doc, "a snapshot")
        at = ts_ms(_opt_str(d.get("snapshotAt")))
        if at is None:
            raise BadAnswer("a snapshot without a readable 'snapshotAt'")
        return cls(at_ms=at, **vars(_read_sample(d)))


@dataclass(slots=True)
class NodeEvent:
    id: int
    node_id: str
    kind: str
    detail: str
    at: str

    @classmethod
    def from_json(cls, doc: Any) -> "NodeEvent":
        d = _obj(doc, "a node event")
        return cls(id=_int(d.get("id")), node_id=_str(d.get("nodeId")), kind=_str(d.get("kind"), "?"),
                   detail=_str(d.get("detail")), at=_str(d.get("at")))


@dataclass(slots=True)
class Directive:
    """One row of the directive audit trail."""

    directive_id: str
    source_node_id: str
    target_node_id: str
    kind: str
    priority: str
    status: str
    created_at: str
    payload: Any = None
    output: Any = None
    error: str | None = None
    metrics: RunMetrics = field(default_factory=RunMetrics)  # what the run used and how long it took
    dispatched_at: str | None = None
    completed_at: str | None = None
    role: str = ""

    @classmethod
    def from_json(cls, doc: Any) -> "Directive":
        d = _obj(doc, "a directive")
        if not isinstance(d.get("directiveId"), str):
            raise BadAnswer("a directive without a 'directiveId'")
        return cls(
            directive_id=d["directiveId"], source_node_id=_str(d.get("sourceNodeId")),
            target_node_id=_str(d.get("targetNodeId")), kind=_str(d.get("kind"), "?"),
            priority=_str(d.get("priority"), "normal"), status=_str(d.get("status"), "?"),
            created_at=_str(d.get("createdAt")), payload=d.get("payload"), output=d.get("output"),
            error=_opt_str(d.get("error")), metrics=read_run_metrics(d),
            dispatched_at=_opt_str(d.get("dispatchedAt")), completed_at=_opt_str(d.get("completedAt")),
            role=_str(d.get("role")),
        )
