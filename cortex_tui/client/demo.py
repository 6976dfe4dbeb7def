"""Deterministic demo data: a small curated fleet for ``cortex-tui --demo`` and the snapshot
tests, and a generator of large synthetic fleets for the benchmark.

Nothing here reads the wall clock: the demo has its own clock that starts at ``DEMO_EPOCH_MS``
and only moves when ``DemoFleet.advance`` is called, so the same seed always renders the same
screen. Resource series are computed from a per-node formula on demand (a fleet of 1,000 nodes
would otherwise hold 1.4 million samples).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from cortex_node.contracts import REMOTE_PID_BASE, SNAPSHOT_RETENTION, NodeLoad, RunMetrics, Usage, format_ts, parse_ts
from cortex_tui.client.models import (
    Directive,
    FleetState,
    FleetTotals,
    Node,
    NodeEvent,
    Process,
    Snapshot,
    ts_ms,
)
from cortex_tui.client.source import ControlAction

DEMO_EPOCH_MS = parse_ts("2026-11-26T12:00:00Z")
SAMPLE_INTERVAL_MS = 30_000  # the design's heartbeat interval: one snapshot per beat
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class SeriesProfile:
    """How one node's synthetic resource series moves: a slow wave plus deterministic jitter.
    Token counters are cumulative and never decrease (their rate is >= 0 everywhere)."""

    started_ms: int
    cpu_base: float
    cpu_swing: float
    memory_base_mb: float
    memory_swing_mb: float
    memory_total_mb: float
    tokens_per_min: float
    burst_per_min: float
    out_ratio: float
    phase: float
    salt: int

    def sample(self, at_ms: int) -> Snapshot:
        minutes = max(0.0, (at_ms - self.started_ms) / 60_000)
        wave = math.sin(2 * math.pi * at_ms / 5_400_000 + self.phase)  # 90-minute cycle
        jitter = ((at_ms // SAMPLE_INTERVAL_MS * 2_654_435_761 + self.salt) % 1000) / 1000 - 0.5
        cpu = min(100.0, max(0.0, self.cpu_base + self.cpu_swing * wave + 6 * jitter))
        memory = min(self.memory_total_mb, self.memory_base_mb + self.memory_swing_mb * wave)
        period = 47.0  # minutes; the derivative rate + burst * (1 - cos) is never negative
        tokens_in = int(self.tokens_per_min * minutes
                        + self.burst_per_min * (minutes - period / (2 * math.pi) * math.sin(2 * math.pi * minutes / period)))
        tokens_out = int(tokens_in * self.out_ratio)
        return Snapshot(
            at_ms=at_ms, cpu_percent=round(cpu, 1), memory_used_mb=round(memory, 1),
            memory_total_mb=self.memory_total_mb, tokens_in=tokens_in, tokens_out=tokens_out,
            cost_usd=round((tokens_in * 3 + tokens_out * 15) / 1_000_000, 6),
        )


def _profile(rng: random.Random, now_ms: int) -> SeriesProfile:
    total = rng.choice((16_384.0, 32_768.0, 65_536.0, 131_072.0))
    return SeriesProfile(
        started_ms=now_ms - rng.randint(2, 40) * 3_600_000,
        cpu_base=rng.uniform(8, 60), cpu_swing=rng.uniform(3, 25),
        memory_base_mb=total * rng.uniform(0.2, 0.7), memory_swing_mb=total * rng.uniform(0.02, 0.1),
        memory_total_mb=total, tokens_per_min=rng.uniform(200, 4000), burst_per_min=rng.uniform(0, 3000),
        out_ratio=rng.uniform(0.15, 0.45), phase=rng.uniform(0, 2 * math.pi), salt=rng.randint(0, 10_000),
    )


def _with_metrics(node: Node, profile: SeriesProfile | None, now_ms: int) -> Node:
    """The node's metrics are its newest sample, as a real heartbeat would report them."""
    if profile is None or node.heartbeat_age_ms is None:
        return node
    beat_ms = now_ms - node.heartbeat_age_ms
    latest, day_ago = profile.sample(beat_ms), profile.sample(beat_ms - _DAY_MS)
    load = dataclasses.replace(node.load, cpu_percent=latest.cpu_percent, memory_used_mb=latest.memory_used_mb,
                               memory_total_mb=latest.memory_total_mb,
                               uptime_seconds=round((beat_ms - profile.started_ms) / 1000, 1))
    today = Usage(tokens_in=latest.tokens_in - day_ago.tokens_in, tokens_out=latest.tokens_out - day_ago.tokens_out,
                  cost_usd=round(latest.cost_usd - day_ago.cost_usd, 6))
    return dataclasses.replace(node, load=load, today=today, last_heartbeat=format_ts(beat_ms))


def _totals(nodes: list[Node], now_ms: int) -> FleetTotals:
    total = Usage()
    for node in nodes:
        total.add(node.today)
    return FleetTotals(window_end=format_ts(now_ms), usage=total.rounded())


# --- the curated small fleet -----------------------------------------------------------------------
# name, status, tier, group, address, heartbeat age in seconds (None: never heard from)
_SMALL_FLEET = (
    ("atlas", "online", "root", "core", "127.0.0.1:4220", 1.2),
    ("borealis", "connected", "sudo", "core", "10.0.0.11:4220", 8.4),
    ("cygnus", "connected", "root", "gpu", "10.0.0.12:4220", 21.0),
    ("draco", "draining", "sudo", "gpu", "10.0.0.13:4220", 14.2),
    ("eridani", "disconnected", "unprivileged", "edge", "10.0.1.21:4220", 187.0),
    ("fornax", "connected", "unprivileged", "edge", "10.0.1.22:4220", 74.0),
    ("gemini", "sealed", "root", "gpu", "10.0.0.14:4220", 2460.0),
    ("hydra", "degraded", "sudo", "edge", "10.0.1.23:4220", 33.5),
    ("indus", "offline", "unprivileged", "edge", "10.0.1.24:4220", None),
)
_AGENT_TYPES = ("planner", "researcher", "coder", "reviewer", "tester", "summarizer")
_DIRECTIVE_KINDS = ("spawn_agent", "execute_task", "query_resources", "forward_message", "sync_state")
_PRIORITIES = ("low", "normal", "normal", "normal", "normal", "high", "high", "critical")
_DIRECTIVE_STATUSES = ("completed",) * 6 + ("failed", "failed", "timed_out", "cancelled", "dispatched", "pending")


def _grown(usage: Usage, tokens: int) -> Usage:
    """A running agent's usage a moment later (a new object: states are never mutated)."""
    return dataclasses.replace(usage, tokens_in=usage.tokens_in + tokens, tokens_out=usage.tokens_out + tokens // 4,
                               cost_usd=round(usage.cost_usd + tokens * 9e-6, 4))


def _node_id(rng: random.Random, name: str) -> str:
    return f"node_{name[:4]}{rng.randint(1000, 9999)}_{''.join(rng.choices('abcdefghjkmnpqrstuvwxyz23456789', k=5))}"


def _agents_for(rng: random.Random, node_id: str, first_pid: int, parent: int | None, count: int,
                status_of_node: str) -> list[Process]:
    """One supervisor and its agents; processes on a node we lost touch with are 'unknown'."""
    lost = status_of_node in ("disconnected", "offline", "sealed")
    session = f"sess_{rng.randint(0, 36 ** 4):04x}"
    supervisor = Process(pid=first_pid, parent_pid=parent, name="supervisor", status="unknown" if lost else "running",
                         node_id=node_id, role="supervisor", session_id=session)
    procs = [supervisor]
    for i in range(1, count):
        agent = rng.choice(_AGENT_TYPES)
        status = "unknown" if lost else rng.choice(("running",) * 5 + ("exited", "failed"))
        tokens_in = rng.randint(500, 250_000)
        procs.append(Process(
            pid=first_pid + i, parent_pid=first_pid, name=agent, status=status, node_id=node_id, role="agent",
            agent_type=agent, session_id=session,
            resources=Usage(tokens_in=tokens_in, tokens_out=int(tokens_in * rng.uniform(0.1, 0.5)),
                            cost_usd=round(tokens_in * 9e-6, 4)),
        ))
    return procs


class DemoFleet:
    """A synthetic fleet with a clock of its own. ``small`` is the curated demo, ``large``
    the benchmark fleet. Treat returned objects as read-only: ``advance`` replaces, never mutates."""

    def __init__(self, state: FleetState, *, seed: int, events: dict[str, list[NodeEvent]] | None = None,
                 directives: list[Directive] | None = None) -> None:
        self.state = state
        self.seed = seed
        self.events = events or {}
        self.directives = directives or []
        self._profiles: dict[str, SeriesProfile] = {}

    @property
    def now_ms(self) -> int:
        return self.state.server_now_ms

    def profile(self, node_id: str) -> SeriesProfile:
        if node_id not in self._profiles:
            self._profiles[node_id] = _profile(random.Random(f"{self.seed}:{node_id}"), DEMO_EPOCH_MS)
        return self._profiles[node_id]

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.state.nodes if n.id == node_id), None)

    def series(self, node_id: str, *, limit: int, since_ms: int | None = None) -> list[Snapshot]:
        """The newest ``limit`` samples at or after ``since``, oldest first, ending at the
        node's last heartbeat (a node we no longer hear from has no new samples)."""
        node = self.node(node_id)
        if node is None or node.heartbeat_age_ms is None:
            return []
        profile = self.profile(node_id)
        newest = (self.now_ms - node.heartbeat_age_ms) // SAMPLE_INTERVAL_MS * SAMPLE_INTERVAL_MS
        oldest = max(profile.started_ms, newest - (SNAPSHOT_RETENTION - 1) * SAMPLE_INTERVAL_MS)
        if since_ms is not None:
            oldest = max(oldest, since_ms)
        count = min(limit, max(0, (newest - oldest) // SAMPLE_INTERVAL_MS + 1))
        return [profile.sample(newest - k * SAMPLE_INTERVAL_MS) for k in reversed(range(count))]

    def advance(self, seconds: float) -> None:
        """Move the demo clock: live nodes beat again, lost ones age, running agents use tokens."""
        step_ms = int(seconds * 1000)
        now = self.now_ms + step_ms
        rng = random.Random(f"{self.seed}:{now}")
        nodes = []
        for node in self.state.nodes:
            age = node.heartbeat_age_ms
            if age is not None:
                live = node.is_live
                age = (age + step_ms) % SAMPLE_INTERVAL_MS if live else age + step_ms
            nodes.append(_with_metrics(dataclasses.replace(node, heartbeat_age_ms=age), self.profile(node.id), now))
        processes = [
            dataclasses.replace(p, resources=_grown(p.resources, rng.randint(0, 400)))
            if p.status == "running" and p.role == "agent" else p
            for p in self.state.processes
        ]
        self.state = FleetState(self.state.self_id, nodes, processes, _totals(nodes, now), now)

    def set_lifecycle(self, node_id: str, action: ControlAction) -> Node:
        node = self.node(node_id)
        if node is None:
            raise KeyError(node_id)
        lifecycle = {"drain": "draining", "undrain": "active", "seal": "sealed"}[action.value]
        status = node.status
        if node.status not in ("disconnected", "offline"):
            status = {"draining": "draining", "sealed": "sealed"}.get(lifecycle, "online" if node.is_self else "connected")
        updated = dataclasses.replace(node, lifecycle=lifecycle, status=status)
        nodes = [updated if n.id == node_id else n for n in self.state.nodes]
        self.state = dataclasses.replace(self.state, nodes=nodes, totals=_totals(nodes, self.now_ms))
        self.events.setdefault(node_id, []).insert(0, NodeEvent(
            id=max((e.id for evs in self.events.values() for e in evs), default=0) + 1, node_id=node_id,
            kind=lifecycle if lifecycle != "active" else "undrained", detail="cortex-tui operator",
            at=format_ts(self.now_ms)))
        return updated

    # --- builders --------------------------------------------------------------------------------
    @classmethod
    def small(cls, seed: int = 7) -> "DemoFleet":
        rng = random.Random(seed)
        now = DEMO_EPOCH_MS
        ids = {name: _node_id(rng, name) for name, *_ in _SMALL_FLEET}
        self_id = ids["atlas"]
        nodes: list[Node] = []
        for name, status, tier, group, address, age_s in _SMALL_FLEET:
            host, port = address.rsplit(":", 1)
            nodes.append(Node(
                id=ids[name], name=name, status=status,
                lifecycle={"draining": "draining", "sealed": "sealed"}.get(status, "active"),
                is_self=ids[name] == self_id, endpoint=f"http://{address}", host=host, port=int(port), tier=tier,
                group=group, version="0.1.0", capabilities=("heartbeat", "report", "topology"),
                labels={"zone": rng.choice(("eu-west", "eu-central", "us-east"))},
                boot_id=f"{rng.getrandbits(48):012x}",
                load=NodeLoad(disk_used_mb=round(rng.uniform(40_000, 400_000), 1), disk_total_mb=512_000.0),
                heartbeat_age_ms=None if age_s is None else int(age_s * 1000),
                registered_at=format_ts(now - rng.randint(3, 30) * _DAY_MS // 24),
            ))
        processes = [Process(pid=1, parent_pid=None, name="cortex-node", status="running", node_id=self_id, role="node")]
        processes += _agents_for(rng, self_id, 2, 1, 5, "online")
        next_remote = REMOTE_PID_BASE
        for node in nodes[1:]:
            if node.status == "offline":
                continue
            count = rng.randint(2, 5)
            processes += _agents_for(rng, node.id, next_remote, None, count, node.status)
            next_remote += count
        fleet = cls(FleetState(self_id, [], processes, _totals([], now), now), seed=seed)
        nodes = [_with_metrics(n, fleet.profile(n.id), now) for n in nodes]
        for i, node in enumerate(nodes):
            running = [p for p in processes if p.node_id == node.id and p.status == "running"]
            load = dataclasses.replace(node.load, active_processes=len(running),
                                       active_sessions=len({p.session_id for p in running if p.session_id}))
            nodes[i] = dataclasses.replace(node, load=load)
        fleet.state = FleetState(self_id, nodes, processes, _totals(nodes, now), now)
        fleet.events = _events(rng, nodes, now)
        fleet.directives = _directives(rng, nodes, now)
        return fleet

    @classmethod
    def large(cls, nodes: int = 1000, processes: int = 10_000, seed: int = 7) -> "DemoFleet":
        return cls(large_fleet(nodes, processes, seed=seed), seed=seed)


def _events(rng: random.Random, nodes: list[Node], now_ms: int) -> dict[str, list[NodeEvent]]:
    """A believable history per node, newest first, ending in the node's current state."""
    events: dict[str, list[NodeEvent]] = {}
    next_id = 1
    for node in nodes:
        t = ts_ms(node.registered_at) or now_ms
        story = [("registered", f"{node.name} at {node.endpoint}")]
        if not node.is_self:
            story.append(("connected", "first heartbeat"))
        story += [("disconnected", "no heartbeat for 120 s"), ("recovered", "heartbeat resumed")] * rng.randint(0, 2)
        story.append({"draining": ("draining", "operator: kernel upgrade"),
                      "disconnected": ("disconnected", "no heartbeat for 120 s"),
                      "sealed": ("sealed", "signal SIGTERM"),
                      "degraded": ("degraded", "memory pressure above 90 %")}.get(node.status, ("restarted", "new boot id")))
        items = []
        for i, (kind, detail) in enumerate(story):
            t += rng.randint(600, 14_400) * 1000 if i else 0
            items.append(NodeEvent(id=next_id, node_id=node.id, kind=kind, detail=detail, at=format_ts(min(t, now_ms))))
            next_id += 1
        events[node.id] = list(reversed(items))
    return events


def _directive_payload(rng: random.Random, kind: str) -> dict:
    return {
        "spawn_agent": lambda: {"agentType": rng.choice(_AGENT_TYPES), "sessionId": f"sess_{rng.getrandbits(16):04x}"},
        "execute_task": lambda: {"command": rng.choice((["pytest", "-q"], ["make", "build"], ["git", "fetch"]))},
        "query_resources": lambda: {"window": "24h"},
        "forward_message": lambda: {"to": "reviewer", "text": "Please review the patch for issue 42."},
        "sync_state": lambda: {"keys": ["sessions", "agents"]},
    }[kind]()


def _directives(rng: random.Random, nodes: list[Node], now_ms: int) -> list[Directive]:
    """The audit trail, newest first, as the node lists it (ApiPath.DIRECTIVES): every row was
    sent (outbound) or received (inbound) by the dashboard's own node."""
    me = next(n for n in nodes if n.is_self)
    peers = [n for n in nodes if n.status != "offline" and not n.is_self]
    records = []
    t = now_ms - 26 * 60_000
    for i in range(24):
        t += rng.randint(20, 90) * 1000
        kind, status = rng.choice(_DIRECTIVE_KINDS), rng.choice(_DIRECTIVE_STATUSES)
        peer = rng.choice(peers)
        source, target = (me, peer) if rng.random() < 0.6 else (peer, me)
        duration = {"pending": 0, "dispatched": 0, "timed_out": 120_000}.get(status, rng.randint(40, 90_000))
        tokens_in = rng.randint(200, 40_000) if kind in ("spawn_agent", "execute_task", "forward_message") else 0
        output = error = None
        if status == "completed":
            output = {"spawn_agent": {"pid": REMOTE_PID_BASE + rng.randint(0, 60)},
                      "execute_task": {"exitCode": 0, "stdout": "42 passed in 3.1s"},
                      "query_resources": {"cpuPercent": round(rng.uniform(5, 80), 1)},
                      "forward_message": {"delivered": True},
                      "sync_state": {"synced": 2}}[kind]
        elif status == "failed":
            error = rng.choice(("tier policy: 'unprivileged' nodes do not run execute_task",
                                "command exited with status 2", "agent type 'coder' is not installed"))
        elif status == "timed_out":
            error = "no terminal state within the TTL of 120000 ms; CancelTask sent"
        elif status == "cancelled":
            error = "cancelled by operator"
        records.append(Directive(
            directive_id=f"dir_demo{i:03d}_{rng.getrandbits(20):05x}", source_node_id=source.id,
            target_node_id=target.id, kind=kind, priority=rng.choice(_PRIORITIES), status=status,
            created_at=format_ts(t), payload=_directive_payload(rng, kind), output=output, error=error,
            metrics=RunMetrics(tokens_in=tokens_in if status == "completed" else 0,
                               tokens_out=tokens_in // 3 if status == "completed" else 0,
                               cost_usd=round(tokens_in * 9e-6, 4) if status == "completed" else 0.0,
                               duration_ms=duration, tool_calls=rng.randint(0, 12) if status == "completed" else 0),
            dispatched_at=format_ts(t + 5), completed_at=format_ts(t + duration) if duration else None,
            role="outbound" if source.is_self else "inbound",
        ))
    return list(reversed(records))


# --- the large synthetic fleet ---------------------------------------------------------------------
_LARGE_STATUSES = ("connected",) * 14 + ("draining", "degraded", "disconnected", "sealed")
_GROUPS = ("core", "gpu", "edge", "batch")
_TIERS = ("root", "sudo", "unprivileged")


def large_fleet(nodes: int = 1000, processes: int = 10_000, *, seed: int = 7, tick: int = 0) -> FleetState:
    """A synthetic fleet of ``nodes`` nodes and ``processes`` processes. The structure (ids,
    names, process tree) depends only on ``seed``; the figures (CPU, memory, tokens,
    heartbeat ages) change with ``tick``, so consecutive ticks model consecutive refreshes."""
    shape = random.Random(seed)
    figures = random.Random(seed * 1_000_003 + tick)
    now = DEMO_EPOCH_MS + tick * 2_000
    node_list: list[Node] = []
    for i in range(nodes):
        status = "online" if i == 0 else shape.choice(_LARGE_STATUSES)
        lost = status in ("disconnected", "sealed")
        total = shape.choice((16_384.0, 32_768.0, 65_536.0))
        node_list.append(Node(
            id=f"node_{i:04d}_{shape.getrandbits(20):05x}", name=f"node-{i:04d}", status=status,
            lifecycle={"draining": "draining", "sealed": "sealed"}.get(status, "active"), is_self=i == 0,
            endpoint=f"http://10.{i // 250}.{i % 250}.10:4220", host=f"10.{i // 250}.{i % 250}.10", port=4220,
            tier=shape.choice(_TIERS), group=shape.choice(_GROUPS), version="0.1.0",
            load=NodeLoad(cpu_percent=round(figures.uniform(2, 95), 1),
                          memory_used_mb=round(total * figures.uniform(0.1, 0.9), 1), memory_total_mb=total,
                          active_sessions=figures.randint(0, 6), active_processes=figures.randint(0, 20)),
            today=Usage(tokens_in=figures.randint(0, 2_000_000), tokens_out=figures.randint(0, 500_000),
                        cost_usd=round(figures.uniform(0, 40), 2)),
            heartbeat_age_ms=figures.randint(130_000, 900_000) if lost else figures.randint(0, 30_000),
        ))
    self_id = node_list[0].id
    local = min(processes, 10)
    procs = [Process(pid=1, parent_pid=None, name="cortex-node", status="running", node_id=self_id, role="node")]
    procs += [Process(pid=p, parent_pid=1, name=shape.choice(_AGENT_TYPES), status="running", node_id=self_id,
                      role="agent") for p in range(2, local + 1)]
    remote_nodes = node_list[1:] or node_list
    per_node = max(1, (processes - local) // len(remote_nodes))
    pid = REMOTE_PID_BASE
    for n in range((processes - local + per_node - 1) // per_node):
        owner = remote_nodes[n % len(remote_nodes)]
        block = min(per_node, processes - len(procs))
        supervisor = pid
        for k in range(block):
            agent = shape.choice(_AGENT_TYPES)
            procs.append(Process(
                pid=pid, parent_pid=None if k == 0 else supervisor, name="supervisor" if k == 0 else agent,
                status=figures.choice(("running",) * 8 + ("exited", "failed")), node_id=owner.id,
                role="supervisor" if k == 0 else "agent", agent_type=None if k == 0 else agent,
                session_id=f"sess_{supervisor:x}",
                resources=Usage(tokens_in=figures.randint(0, 90_000), tokens_out=figures.randint(0, 30_000)),
            ))
            pid += 1
    return FleetState(self_id, node_list, procs, _totals(node_list, now), now)


class DemoClient:
    """A ``FleetSource`` over a ``DemoFleet``. With ``step_s`` > 0 every fleet fetch after the
    first advances the demo clock by that much, so ``cortex-tui --demo`` looks alive; the first
    answer is always the fleet as built, which keeps screenshots reproducible."""

    label = "demo"

    def __init__(self, fleet: DemoFleet | None = None, *, step_s: float = 0.0) -> None:
        self.fleet = fleet or DemoFleet.small()
        self._step_s = step_s
        self._fetched = False

    async def fetch_fleet(self) -> FleetState:
        if self._fetched and self._step_s > 0:
            self.fleet.advance(self._step_s)
        self._fetched = True
        return self.fleet.state

    async def fetch_snapshots(self, node_id: str, *, limit: int, since_ms: int | None = None) -> list[Snapshot]:
        return self.fleet.series(node_id, limit=limit, since_ms=since_ms)

    async def fetch_events(self, node_id: str, *, limit: int = 50) -> list[NodeEvent]:
        return self.fleet.events.get(node_id, [])[:limit]

    async def fetch_directives(self, *, status: str | None = None, limit: int = 200) -> list[Directive]:
        return [d for d in self.fleet.directives if status is None or d.status == status][:limit]

    async def control(self, action: ControlAction, node: Node) -> Node:
        return self.fleet.set_lifecycle(node.id, action)

    async def close(self) -> None:
        return None
