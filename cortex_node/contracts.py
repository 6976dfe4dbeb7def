"""The vocabulary of the swarm: enums, dataclasses, constants and the one timestamp format.

Everything here travels on the wire in camelCase JSON (``to_wire``/``from_wire``). This module
imports nothing of ours, so every other part (and cortex_tui) may import it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import secrets
import string
import time
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

# --- constants of the CortexPrism "Swarm" design -------------------------------------------------
HEARTBEAT_INTERVAL_MS = 30_000
NODE_STALE_MS = 120_000
SNAPSHOT_RETENTION = 1440
DEFAULT_TTL_MS = 120_000
REMOTE_PID_BASE = 900_000
DEFAULT_PORT = 4220
DEFAULT_HOST = "127.0.0.1"
REPORT_WINDOW_MS = 24 * 3600 * 1000
HEARTBEAT_JITTER = 0.10
SWARM_VERSION = "0.1.0"
# limits a node keeps against its peers (config keys maxNodes, forgetAfterMs, maxQueued)
MAX_NODES = 10_000  # nodes in one registry; a new one beyond is refused
FORGET_AFTER_MS = 24 * 3600_000  # a peer silent this long is forgotten with what is kept of it
MAX_QUEUED = 1000  # directives waiting for a worker (below the A2A task store's 5,000)


class WireEnum(str, enum.Enum):
    """A string enum whose wire form is its value."""

    def __str__(self) -> str:  # so f-strings and typer print the value
        return self.value

    @classmethod
    def parse(cls, value: Any, what: str) -> "WireEnum":
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"{what} must be one of {allowed}; got {value!r}") from None


class NodeTier(WireEnum):
    ROOT = "root"
    SUDO = "sudo"
    UNPRIVILEGED = "unprivileged"


class NodeStatus(WireEnum):
    ONLINE = "online"  # the node itself, serving
    OFFLINE = "offline"  # stopped cleanly / known but never heard from
    CONNECTED = "connected"  # a peer whose heartbeats arrive
    DISCONNECTED = "disconnected"  # a peer whose heartbeat is older than stale_after
    DEGRADED = "degraded"
    DRAINING = "draining"  # takes no new work, finishes what it has
    SEALED = "sealed"  # left the swarm for good (until restarted)

    @property
    def is_live(self) -> bool:
        """The one definition of "up": the node takes part in the fleet (counted online,
        reached by broadcasts)."""
        return self in _LIVE_STATUSES


_LIVE_STATUSES = frozenset({NodeStatus.ONLINE, NodeStatus.CONNECTED, NodeStatus.DRAINING, NodeStatus.DEGRADED})


class Lifecycle(WireEnum):
    """What the operator asked of a node; liveness is separate (see ``derive_status``)."""

    ACTIVE = "active"
    DRAINING = "draining"
    SEALED = "sealed"


class DirectiveKind(WireEnum):
    SPAWN_AGENT = "spawn_agent"
    EXECUTE_TASK = "execute_task"
    QUERY_RESOURCES = "query_resources"
    FORWARD_MESSAGE = "forward_message"
    SYNC_STATE = "sync_state"


class DirectivePriority(WireEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Higher runs first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {
    DirectivePriority.LOW: 0,
    DirectivePriority.NORMAL: 1,
    DirectivePriority.HIGH: 2,
    DirectivePriority.CRITICAL: 3,
}


class DirectiveResultStatus(WireEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class DirectiveStatus(WireEnum):
    """Status of a row in the directive audit trail."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self not in (DirectiveStatus.PENDING, DirectiveStatus.DISPATCHED)


class DirectiveRole(WireEnum):
    """Which side of a directive a row records: each side keeps its own."""

    OUTBOUND = "outbound"  # the dispatcher's row
    INBOUND = "inbound"  # the target's row


class ProcessStatus(WireEnum):
    RUNNING = "running"
    EXITED = "exited"  # ended with exit code 0
    FAILED = "failed"  # ended with another code
    KILLED = "killed"  # ended by us (terminate, cancel, TTL)
    UNKNOWN = "unknown"  # a remote process whose node went silent

    @property
    def finished(self) -> bool:
        return self in (ProcessStatus.EXITED, ProcessStatus.FAILED, ProcessStatus.KILLED)


def derive_status(*, is_self: bool, lifecycle: Lifecycle, stale: bool, heard: bool = True) -> NodeStatus:
    """One rule for the status word every output shows: lifecycle wins over liveness, except
    that a peer we no longer hear from is ``disconnected`` whatever it last said, and a peer
    known only from its card (never a heartbeat) is ``offline``, not connected."""
    if lifecycle is Lifecycle.SEALED:
        return NodeStatus.SEALED
    if not is_self and not heard:
        return NodeStatus.OFFLINE
    if stale and not is_self:
        return NodeStatus.DISCONNECTED
    if lifecycle is Lifecycle.DRAINING:
        return NodeStatus.DRAINING
    return NodeStatus.ONLINE if is_self else NodeStatus.CONNECTED


# --- timestamps: ISO 8601 UTC with millisecond precision and 'Z', everywhere ----------------------
_SECOND_TEXT: list = [None, ""]  # the last whole second formatted: most timestamps share it


def format_ts(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    seconds, millis = divmod(int(ms), 1000)
    if _SECOND_TEXT[0] != seconds:
        _SECOND_TEXT[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_SECOND_TEXT[1]}.{millis:03d}Z"


def parse_ts(text: str) -> int:
    """ISO 8601 (with Z or an offset) -> epoch milliseconds. Raises ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected an ISO 8601 timestamp, got {text!r}")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def utc_midnight_ms(ms: int) -> int:
    return ms - ms % 86_400_000


# --- ids: <prefix>_<base36 ms>_<5 random> ---------------------------------------------------------
_B36 = string.digits + string.ascii_lowercase


def base36(n: int) -> str:
    if n <= 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


def new_id(prefix: str, now_ms: int) -> str:
    # one draw for the five random characters (secrets.choice per character was 5 % of dispatch)
    rand = base36(secrets.randbelow(36 ** 5)).rjust(5, "0")
    return f"{prefix}_{base36(int(now_ms))}_{rand}"


def new_node_id(now_ms: int) -> str:
    return new_id("node", now_ms)


def new_directive_id(now_ms: int) -> str:
    return new_id("dir", now_ms)


# --- camelCase wire form --------------------------------------------------------------------------
def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


_WIRE_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {}
_PLAIN = frozenset((str, int, bool, type(None)))  # exact types: str-based enums must still convert


def _wire_fields(cls: type) -> tuple[tuple[str, str], ...]:
    fields = _WIRE_FIELDS.get(cls)
    if fields is None:
        fields = _WIRE_FIELDS[cls] = tuple((f.name, camel(f.name)) for f in dataclasses.fields(cls))
    return fields


def to_wire(value: Any) -> Any:
    """Dataclasses -> dicts with camelCase keys, enums -> values, recursively. On every
    response path, so the common cases are checked first and field names are cached."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: to_wire(getattr(value, name)) for name, key in _wire_fields(type(value))}
    return value


MAX_QUOTED_CHARS = 80  # input quoted in an error message is cut here


def quote(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr`` of client input for an error message, cut to ``limit`` characters + '…'."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


class WireError(ValueError):
    """A wire document that does not fit its type; the message names the field."""


MAX_JSON_DEPTH = 64  # deeper documents are refused: nothing of ours nests that far, and
#                      storing or echoing them would exhaust the recursion limit


def json_depth_exceeds(doc: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``doc`` nests lists/objects more than ``limit`` levels (checked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def from_wire(cls: type, data: Any, where: str = "") -> Any:
    """camelCase dict -> dataclass, checking types and enums. Unknown keys are ignored.
    On every request path: each class's field checks are built once (see ``_reader``)."""
    return _reader(cls)(data, where)


Reader = Callable[[Any, str], Any]  # (value, path of the value) -> the checked value
_READERS: dict[Any, Reader] = {}


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _reader(hint: Any) -> Reader:
    reader = _READERS.get(hint)
    if reader is None:
        reader = _READERS[hint] = _build_reader(hint)
    return reader


def _build_reader(hint: Any) -> Reader:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        choices = [_reader(a) for a in args if a is not type(None)]

        def read_union(value: Any, path: str) -> Any:
            if value is None and optional:
                return None
            errors = []
            for choice in choices:
                try:
                    return choice(value, path)
                except WireError as exc:
                    errors.append(str(exc))
            raise WireError(errors[0] if errors else f"{path} has the wrong type")
        return read_union
    if hint is Any:
        return lambda value, path: value
    if origin in (list, tuple):
        inner = _reader(args[0] if args else Any)

        def read_list(value: Any, path: str) -> list:
            if not isinstance(value, list):
                raise WireError(f"{path} must be a list")
            return [inner(v, _join(path, i)) for i, v in enumerate(value)]
        return read_list
    if origin is dict:
        values = _reader(args[1]) if len(args) == 2 and args[1] is not Any else None

        def read_dict(value: Any, path: str) -> dict:
            if not isinstance(value, dict):
                raise WireError(f"{path} must be an object")
            if values is None:
                return dict(value)
            return {k: values(v, _join(path, k)) for k, v in value.items()}
        return read_dict
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        by_value = {m.value: m for m in hint}
        allowed = ", ".join(str(m.value) for m in hint)

        def read_enum(value: Any, path: str) -> Any:
            try:
                return by_value[value]
            except (KeyError, TypeError):
                raise WireError(f"{path} must be one of {allowed}; got {value!r}") from None
        return read_enum
    if dataclasses.is_dataclass(hint):
        return _dataclass_reader(hint)
    return _SCALAR_READERS.get(hint, lambda value, path: value)


def _dataclass_reader(cls: type) -> Reader:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, camel(f.name),
               f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
              for f in dataclasses.fields(cls)]
    readers: dict[str, Reader] = {}

    def read_dataclass(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise WireError(f"{where or cls.__name__} must be an object, got {type(data).__name__}")
        if not readers:  # filled on first use: a field may name its own class
            readers.update((name, _reader(hints[name])) for name, _, _ in fields)
        kwargs = {}
        for name, key, required in fields:
            if key in data:
                kwargs[name] = readers[name](data[key], _join(where, key))
            elif required:
                raise WireError(f"{_join(where, key)} is required")
        return cls(**kwargs)
    return read_dataclass


def _read_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise WireError(f"{path} must be true or false")
    return value


def _read_int(value: Any, path: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise WireError(f"{path} must be an integer")


def _read_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError(f"{path} must be a number")
    if not math.isfinite(value):
        raise WireError(f"{path} must be a finite number")
    return float(value)


def _read_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{path} must be a string")
    return value


_SCALAR_READERS: dict[Any, Reader] = {bool: _read_bool, int: _read_int, float: _read_float, str: _read_str}


# --- the swarm's documents ------------------------------------------------------------------------
@dataclass
class Usage:
    """The one resource vector: what work used. Cumulative over a life (a process, a node's boot)
    wherever it is a total; ``peak_memory_mb`` is a high-water mark, never summed."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0
    cpu_ms: float = 0.0
    peak_memory_mb: float = 0.0

    def add(self, other: "Usage") -> None:
        """Counters add up; the peak is the higher one."""
        for name in USAGE_COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.peak_memory_mb = max(self.peak_memory_mb, other.peak_memory_mb)

    def usage(self) -> "Usage":
        """This vector alone (a copy), whatever subclass carries it."""
        return project(Usage, self)

    def rounded(self) -> "Usage":
        """As reports show it: cost to a micro-dollar, CPU time and memory to a tenth."""
        out = self.usage()
        for name, digits in _USAGE_PRECISION.items():
            setattr(out, name, round(getattr(out, name), digits))
        return out


def project(cls: type, source: Any) -> Any:
    """A ``cls`` built from the same-named fields of ``source`` (e.g. the usage vector of a record
    that carries one): one generic copy instead of field lists written out."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return cls(**{name: getattr(source, name) for name in names})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))
_USAGE_PRECISION = {"cost_usd": 6, "cpu_ms": 1, "peak_memory_mb": 1}
USAGE_COUNTERS = tuple(f for f in USAGE_FIELDS if f != "peak_memory_mb")  # cumulative: increase() applies


@dataclass
class RunMetrics(Usage):
    """What one run used (a directive on its target, an agent from start to exit) and how long it took."""

    duration_ms: int = 0


@dataclass
class HostLoad:
    """A machine's gauges at one moment (psutil)."""

    cpu_percent: float = 0.0
    memory_used_mb: float = 0.0
    memory_total_mb: float = 0.0
    disk_used_mb: float = 0.0
    disk_total_mb: float = 0.0


@dataclass
class NodeLoad(HostLoad):
    """A node's gauges: the host's, plus what the node runs and how long it has been up."""

    active_sessions: int = 0
    active_processes: int = 0
    uptime_seconds: float = 0.0


@dataclass
class NodeMetrics(NodeLoad):
    """What the registry shows of a node: its load now and its usage since UTC midnight."""

    today: Usage = field(default_factory=Usage)


@dataclass
class Snapshot(NodeLoad, Usage):
    """One sample of a node's series (and the heartbeat's ``counters``): cumulative usage since
    the node started, plus its load. The store's snapshot columns are these fields."""


SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(Snapshot))
_SNAPSHOT_KEYS = tuple((name, camel(name)) for name in SNAPSHOT_FIELDS)  # read on every heartbeat
MAX_COUNTER = 1e15  # far beyond any real total; larger values are garbage that would poison sums


def read_counters(doc: Any, where: str) -> Snapshot:
    """A peer's ``counters``: every figure a number from 0 to MAX_COUNTER (missing ones 0)."""
    if not isinstance(doc, dict):
        raise WireError(f"{where} must be an object")
    values = {}
    for name, key in _SNAPSHOT_KEYS:
        value = doc.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_COUNTER:
            raise WireError(f"{where}.{key} must be a number from 0 to {MAX_COUNTER:g}; got {value!r}")
        values[name] = value
    return Snapshot(**values)


def read_lenient(cls: type, doc: Any) -> Any:
    """A flat dataclass of numbers and strings from camelCase JSON, tolerantly: a field that is
    missing, of the wrong type or not finite keeps its default (monitors must survive older and
    newer nodes). Other fields keep their defaults."""
    return lenient_reader(cls)(doc)


def lenient_reader(cls: type, prefix: str = "") -> Callable[[Any], Any]:
    """``read_lenient`` for one class, compiled once (the way dataclasses writes ``__init__``):
    monitors read 10,000 processes a refresh. ``prefix`` reads ``totalTokensIn`` for ``tokens_in``."""
    reader = _LENIENT.get((cls, prefix))
    if reader is None:
        reader = _LENIENT[(cls, prefix)] = _lenient_reader(cls, prefix)
    return reader


_LENIENT: dict[tuple[type, str], Callable[[Any], Any]] = {}
# What a field of each type accepts, as source lines ({v}: the value, {d}: the field's default).
# A number is finite when v - v == 0; bool is not an int here.
_ACCEPT = {
    int: ("if type({v}) is not int:",
          "    {v} = int({v}) if type({v}) is float and {v} - {v} == 0 else {d}"),
    float: ("if type({v}) is not float or {v} - {v} != 0:",
            "    {v} = float({v}) if type({v}) is int else {d}"),
    str: ("if type({v}) is not str:",
          "    {v} = {d}"),
}


def _lenient_reader(cls: type, prefix: str) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {"cls": cls}
    body, args = [], []
    for i, f in enumerate(dataclasses.fields(cls)):
        accept = _ACCEPT.get(hints[f.name])
        if accept is None or f.default is dataclasses.MISSING:
            continue  # not a figure, or no plain default: it keeps what the class gives it
        key = camel(f"{prefix}_{f.name}" if prefix else f.name)
        namespace[f"d{i}"] = f.default
        body.append(f"v{i} = get({key!r})")
        body += [line.format(v=f"v{i}", d=f"d{i}") for line in accept]
        args.append(f"{f.name}=v{i}")
    source = "\n    ".join(["def read(doc):", "if not isinstance(doc, dict):", "    return cls()", "get = doc.get",
                             *body, f"return cls({', '.join(args)})"])
    exec(source, namespace)  # the source holds only the class's own field names and keys
    return namespace["read"]


@dataclass
class SwarmNodeRegistration:
    name: str
    endpoint: str
    tier: NodeTier = NodeTier.ROOT
    id: str | None = None
    a2a_endpoint: str | None = None
    capabilities: list[str] = field(default_factory=list)
    version: str = SWARM_VERSION
    group_name: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    boot_id: str | None = None


@dataclass
class SwarmNode:
    id: str
    name: str
    endpoint: str
    tier: NodeTier
    status: NodeStatus
    lifecycle: Lifecycle
    is_self: bool
    a2a_endpoint: str | None
    host: str | None
    port: int | None
    capabilities: list[str]
    version: str
    group_name: str
    labels: dict[str, str]
    metrics: NodeMetrics
    boot_id: str | None
    last_heartbeat: str | None
    heartbeat_age_ms: int | None
    registered_at: str
    updated_at: str


@dataclass
class SwarmDirective:
    directive_id: str
    source_node_id: str
    target_node_id: str
    kind: DirectiveKind
    payload: dict[str, Any] = field(default_factory=dict)
    priority: DirectivePriority = DirectivePriority.NORMAL
    ttl_ms: int = DEFAULT_TTL_MS
    created_at: str | None = None
    expires_at: str | None = None
    parent_directive_id: str | None = None


@dataclass
class SwarmDirectiveResult:
    directive_id: str
    node_id: str
    status: DirectiveResultStatus
    output: Any = None
    error: str | None = None
    metrics: RunMetrics = field(default_factory=RunMetrics)
    completed_at: str | None = None


@dataclass(kw_only=True)
class NodeUsage(Usage):
    """One node's line of the fleet report (24 h window unless said otherwise)."""

    node_id: str
    name: str
    status: NodeStatus
    snapshots: int = 0


@dataclass
class SwarmResourceReport:
    window_start: str
    window_end: str
    total_nodes: int
    online_nodes: int
    total_tokens_in: int
    total_tokens_out: int
    total_cost_usd: float
    total_tool_calls: int
    total_cpu_ms: float
    total_peak_memory_mb: float
    per_node: list[NodeUsage]


@dataclass
class ProcessInfo:
    """One entry of a kernel's process table (local PIDs from 1, remote from REMOTE_PID_BASE)."""

    pid: int
    parent_pid: int | None
    name: str
    role: str
    status: ProcessStatus
    node_id: str
    agent_id: str | None = None
    session_id: str | None = None
    agent_type: str | None = None
    os_pid: int | None = None
    remote_pid: int | None = None
    started_at: str | None = None
    exited_at: str | None = None
    exit_code: int | None = None
    resources: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self.status = ProcessStatus(self.status)


@dataclass(kw_only=True)
class TopologyNode(Usage):
    """A node in the topology with its usage: ours since start, a peer's since UTC midnight."""

    id: str
    name: str
    is_self: bool
    status: NodeStatus
    process_count: int
    remote_process_count: int


@dataclass
class SwarmTopology:
    self_id: str
    nodes: list[TopologyNode]
    processes: list[ProcessInfo]


# --- directives: the request, each kind's payload and outcome, the audit record -------------------
MAX_TTL_MS = 24 * 3600 * 1000


def read_strict(cls: type, data: Any, where: str = "") -> Any:
    """``from_wire`` for what a client sends: keys the type does not have are refused (naming them
    and the allowed ones), and so is null: an optional field is left out, never sent as null."""
    if isinstance(data, dict):
        allowed = [key for _, key in _wire_fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            prefix = f"{where}: " if where else ""
            raise WireError(f"{prefix}unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        for key, value in data.items():
            if value is None:
                raise WireError(f"{_join(where, key)} must not be null; leave it out instead")
    return from_wire(cls, data, where)


_NON_EMPTY = {"schema": {"minLength": 1}}  # field metadata: extra JSON-schema words for api/openapi.py


@dataclass
class DispatchRequest:
    """``POST /api/swarm/directives``: one target (a node id, a URL, or a group), a kind and its payload."""

    kind: DirectiveKind
    target_node_id: str | None = field(default=None, metadata=_NON_EMPTY)
    target_endpoint: str | None = field(default=None, metadata=_NON_EMPTY)
    group: str | None = field(default=None, metadata=_NON_EMPTY)
    payload: dict[str, Any] = field(default_factory=dict)
    priority: DirectivePriority = DirectivePriority.NORMAL
    ttl_ms: int = field(default=DEFAULT_TTL_MS, metadata={"schema": {"minimum": 1, "maximum": MAX_TTL_MS}})
    parent_directive_id: str | None = field(default=None, metadata=_NON_EMPTY)
    wait: bool = True

    def __post_init__(self) -> None:
        for key in ("target_node_id", "target_endpoint", "group", "parent_directive_id"):
            if getattr(self, key) == "":
                raise WireError(f"{camel(key)} must be a non-empty string")
        if sum(1 for t in (self.target_node_id, self.target_endpoint, self.group) if t is not None) != 1:
            raise WireError("name exactly one target: targetNodeId, targetEndpoint or group")
        if not 1 <= self.ttl_ms <= MAX_TTL_MS:
            raise WireError(f"ttlMs must be an integer from 1 to {MAX_TTL_MS}; got {self.ttl_ms!r}")
        if json_depth_exceeds(self.payload):
            raise WireError(f"payload nests deeper than {MAX_JSON_DEPTH} levels")


@dataclass
class ExecuteTaskOutput:
    """What execute_task answers (its payload is read by kernel.commands, which knows the tools)."""

    exit_code: int  # negative: killed by that signal
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int


MAX_REASON_CHARS = 200
MAX_DRAIN_DEADLINE_S = 86_400


@dataclass
class ControlRequest:
    """The body of undrain and seal (optional): why, for the node's history."""

    reason: str = field(default="operator", metadata={"schema": {"maxLength": MAX_REASON_CHARS}})

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_REASON_CHARS:
            raise WireError(f"reason must be a string of at most {MAX_REASON_CHARS} characters")


@dataclass
class DrainRequest(ControlRequest):
    """The body of drain (optional): with a deadline, what still runs then is cancelled."""

    deadline_seconds: float | None = field(
        default=None, metadata={"schema": {"minimum": 0, "maximum": MAX_DRAIN_DEADLINE_S}})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.deadline_seconds is not None and not 0 <= self.deadline_seconds <= MAX_DRAIN_DEADLINE_S:
            raise WireError(f"deadlineSeconds must be a number of seconds from 0 to {MAX_DRAIN_DEADLINE_S}")


CONTROL_ACTIONS = ("drain", "undrain", "seal")


@dataclass(kw_only=True)
class ControlCall(DrainRequest):
    """The params of SwarmControl: one node asks another to drain, undrain or seal."""

    action: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action not in CONTROL_ACTIONS:
            raise WireError(f"action must be {', '.join(CONTROL_ACTIONS[:-1])} or {CONTROL_ACTIONS[-1]};"
                            f" got {self.action!r}")


@dataclass
class SpawnAgentPayload:
    agent_type: str
    instruction: str = ""
    session_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    detach: bool = False

    def __post_init__(self) -> None:
        if not self.agent_type:
            raise WireError("payload.agentType must name a configured agent type")


@dataclass
class SpawnAgentOutput:
    """What spawn_agent answers: who the agent is and, unless detached, how it ended."""

    pid: int
    agent_id: str
    session_id: str | None
    agent_type: str
    node_id: str
    os_pid: int | None = None
    detached: bool = False
    status: ProcessStatus | None = None  # None while a detached agent runs
    exit_code: int | None = None
    output: str | None = None
    truncated: bool = False
    cpu_ms: float = 0.0
    peak_memory_mb: float = 0.0


@dataclass
class ForwardMessagePayload:
    message: Any = None
    target_session_id: str | None = None
    agent_id: str | None = None

    def __post_init__(self) -> None:
        if not self.target_session_id and not self.agent_id:
            raise WireError("forward_message needs payload.targetSessionId or payload.agentId")
        if self.message is None:
            raise WireError("forward_message needs payload.message (any JSON value)")


@dataclass
class ForwardMessageOutput:
    message_id: int
    status: str  # delivered | queued
    delivered_to: list[int] = field(default_factory=list)


@dataclass
class StateVersion:
    hlc: int
    origin: str


@dataclass
class StateItem:
    value: Any
    version: StateVersion


STATE_NAMESPACES = ("memory", "skills", "config")


@dataclass
class SyncStatePayload:
    namespace: str
    entries: dict[str, StateItem] = field(default_factory=dict)
    digest: dict[str, StateVersion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.namespace not in STATE_NAMESPACES:
            raise WireError(f"payload.namespace must be one of {', '.join(STATE_NAMESPACES)}; got {self.namespace!r}")


@dataclass
class SyncStateOutput:
    namespace: str
    applied: int
    entries: dict[str, StateItem]  # at most 256: ``more`` says another round has the rest
    more: bool = False


@dataclass(kw_only=True)
class DirectiveRecord(RunMetrics):
    """One row of the directive audit trail (``swarm_directives``); each side keeps its own."""

    directive_id: str
    source_node_id: str
    target_node_id: str
    kind: DirectiveKind
    payload: dict[str, Any]
    priority: DirectivePriority
    status: DirectiveStatus
    role: DirectiveRole
    ttl_ms: int
    output: Any = None
    error: str | None = None
    parent_directive_id: str | None = None
    dispatched_at: str | None = None
    completed_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


# --- what the REST API answers besides the documents above ----------------------------------------
@dataclass
class QueueFigures:
    queued: int
    running: int
    workers: int


@dataclass
class Health:
    """``GET /healthz``: public liveness."""

    ok: bool
    node_id: str
    name: str
    status: NodeStatus
    version: str
    uptime_seconds: float
    queue: QueueFigures
    loop_lag_seconds: float


@dataclass(kw_only=True)
class SeriesPoint(Snapshot):
    """One point of ``GET /api/swarm/nodes/{id}/snapshots``."""

    snapshot_at: str


@dataclass
class NodeHistoryEntry:
    """One line of a node's history (registered, restarted, disconnected, recovered, draining,
    undrained, sealed, superseded)."""

    id: int
    node_id: str
    kind: str
    detail: str
    at: str


@dataclass
class InboxMessage:
    """A forward_message kept in the node's inbox until an agent of its session took it."""

    id: int
    directive_id: str | None
    session_id: str | None
    agent_id: str | None
    source_node_id: str
    message: Any
    status: str  # queued | delivered
    created_at: str
    delivered_at: str | None


@dataclass(kw_only=True)
class StateRecord(StateItem):
    """One sync_state entry as REST shows it."""

    namespace: str
    key: str


# --- the REST API's paths and error shape ---------------------------------------------------------
def _segment(value: str) -> str:
    """One path segment: an id from the operator or the wire may hold anything, even a slash."""
    from urllib.parse import quote

    return quote(str(value), safe="")


class PathTemplate(str):
    """A route with ``{placeholders}``, as the node declares it; calling it fills them in, each
    value quoted as one path segment: ``ApiPath.NODE(node_id="node_a")``."""

    __slots__ = ()

    def __call__(self, **values: str) -> str:
        return self.format(**{name: _segment(value) for name, value in values.items()})


class ApiPath:
    """Every path of the node's REST API, for its clients (the CLI, cortex-tui, the tests). A fixed
    path is a string; a path with ids is a ``PathTemplate`` to call. ``API_ROUTES`` below lists
    them all with their methods."""

    HEALTH = "/healthz"
    OPENAPI = "/openapi.json"
    METRICS = "/metrics"
    NODES = "/api/swarm/nodes"
    NODES_METRICS = "/api/swarm/nodes/metrics"
    NODE = PathTemplate("/api/swarm/nodes/{node_id}")
    NODE_SNAPSHOTS = PathTemplate("/api/swarm/nodes/{node_id}/snapshots")  # ?limit=&since=
    NODE_EVENTS = PathTemplate("/api/swarm/nodes/{node_id}/events")  # ?limit=
    NODE_CONTROL = PathTemplate("/api/swarm/nodes/{node_id}/{action}")  # action: one of CONTROL_ACTIONS
    NODE_FORGET = PathTemplate("/api/swarm/nodes/{node_id}/forget")  # drop a peer and what is kept of it
    CONTROL = PathTemplate("/api/swarm/{action}")  # the answering node itself
    REPORT = "/api/swarm/report"
    TOPOLOGY = "/api/swarm/topology"
    DIRECTIVES = "/api/swarm/directives"  # GET ?status=&limit=, POST a DispatchRequest
    DIRECTIVE = PathTemplate("/api/swarm/directives/{directive_id}")
    DIRECTIVE_CANCEL = PathTemplate("/api/swarm/directives/{directive_id}/cancel")
    MESSAGES = "/api/swarm/messages"  # ?sessionId=&limit=
    STATE = PathTemplate("/api/swarm/state/{namespace}/{key}")  # GET, PUT {"value": …}
    EVENTS = "/api/swarm/events"  # server-sent events

    @staticmethod
    def control(action: str, node_id: str | None = None) -> str:
        """drain / undrain / seal: of the answering node, or (``node_id``) of any node it knows."""
        if action not in CONTROL_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(CONTROL_ACTIONS)}; got {action!r}")
        if node_id is None:
            return ApiPath.CONTROL(action=action)
        return ApiPath.NODE_CONTROL(node_id=node_id, action=action)


# The whole table as (method, route template): api/routes.py serves exactly these (checked by
# tests/unit/test_api_paths.py), so a client that builds its paths with ApiPath cannot drift from it.
API_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", ApiPath.HEALTH), ("GET", ApiPath.OPENAPI), ("GET", ApiPath.METRICS),
    ("GET", ApiPath.NODES), ("GET", ApiPath.NODES_METRICS), ("GET", ApiPath.NODE),
    ("GET", ApiPath.NODE_SNAPSHOTS), ("GET", ApiPath.NODE_EVENTS), ("POST", ApiPath.NODE_FORGET),
    *(("POST", ApiPath.CONTROL.replace("{action}", a)) for a in CONTROL_ACTIONS),
    *(("POST", ApiPath.NODE_CONTROL.replace("{action}", a)) for a in CONTROL_ACTIONS),
    ("GET", ApiPath.REPORT), ("GET", ApiPath.TOPOLOGY),
    ("GET", ApiPath.DIRECTIVES), ("POST", ApiPath.DIRECTIVES), ("GET", ApiPath.DIRECTIVE),
    ("POST", ApiPath.DIRECTIVE_CANCEL), ("GET", ApiPath.MESSAGES),
    ("GET", ApiPath.STATE), ("PUT", ApiPath.STATE), ("GET", ApiPath.EVENTS),
)


@dataclass
class ErrorDetail:
    """The ``error`` object of every REST error answer, ``{"error": {"code": …, "message": …}}``,
    sent with the HTTP status (api/http.py writes it)."""

    code: str = "error"
    message: str = ""


def error_line(status: int, body: Any, node: str = "the node") -> str:
    """The one line a user sees for an error answer. ``body`` is what came back: the decoded JSON,
    or the raw text or bytes (a proxy's page, a server that is not a cortex-node). ``node`` names
    the node in the 401 hint. Never raises."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    text = body if isinstance(body, str) else ""
    if text:
        import json

        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            pass
    message = read_lenient(ErrorDetail, body.get("error") if isinstance(body, dict) else None).message
    if not message.strip():
        message = _plain_text_message(text, status)
    message = " ".join(message.split())  # one line, whatever the node wrote
    if status == 401:
        return f"{node} refused the request (401): {message}; pass --token-file or set CORTEX_SWARM_TOKEN_FILE"
    return f"{status}: {message}"


def _plain_text_message(text: str, status: int) -> str:
    """A body that is not the error shape: its first line when it is plain text, else the status's name."""
    text = text.strip()
    if text and not text.startswith("<"):  # not an HTML or XML page
        return text.splitlines()[0][:200]
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
