"""Property-based tests (hypothesis), in-process with a ManualClock and a real SQLite file.

1. The directive envelope parser (``transport.message_to_directive``): what a node sends is read
   back unchanged, the older text form is read, and any message that passes the A2A validator
   gives a directive, None, or an EnvelopeError, never another exception.
2. A state machine over the registry, the coordinator's drain/undrain/seal, the receiving side of
   directives (``DirectiveHandler.submit``), time, the stale sweep and a crash/restart, with the
   invariants of docs/RELIABILITY.md: one terminal state per directive, a draining or sealed node
   takes no new work, nobody goes disconnected -> connected without a heartbeat (nor is judged
   disconnected within stale_after of one), the report's totals are the sums of its parts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from contextlib import closing
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from cortex_node.a2a.errors import InvalidParamsError
from cortex_node.a2a.tasks import TaskStore
from cortex_node.a2a.wire import validate_message
from cortex_node.clock import ManualClock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    DirectiveKind,
    DirectivePriority,
    Lifecycle,
    NodeMetrics,
    NodeStatus,
    SwarmDirective,
    SwarmNodeRegistration,
    format_ts,
    parse_ts,
)
from cortex_node.store.db import Store
from cortex_node.contracts import Snapshot
from cortex_node.swarm.coordinator import Coordinator
from cortex_node.contracts import MAX_TTL_MS
from cortex_node.swarm.envelope import EnvelopeError, directive_to_message, message_to_directive

NOW = parse_ts("2026-11-26T10:00:00Z")
SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])

# --- 1. the envelope parser -------------------------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 53), max_value=2 ** 53),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=10)
ids = st.from_regex(r"[a-z]{3,4}_[a-z0-9]{1,12}_[a-z0-9]{5}", fullmatch=True)
timestamps = st.integers(min_value=NOW - 10 ** 9, max_value=NOW + 10 ** 9).map(format_ts)

directives = st.builds(
    SwarmDirective,
    directive_id=st.one_of(ids, st.text(min_size=1, max_size=128)),
    source_node_id=st.one_of(ids, st.text(max_size=20)),
    target_node_id=ids,
    kind=st.sampled_from(DirectiveKind),
    payload=st.dictionaries(st.text(max_size=10), json_value, max_size=5),
    priority=st.sampled_from(DirectivePriority),
    ttl_ms=st.integers(min_value=1, max_value=MAX_TTL_MS),
    created_at=st.one_of(st.none(), timestamps),
    expires_at=st.one_of(st.none(), timestamps),
    parent_directive_id=st.one_of(st.none(), ids),
)


@SETTINGS
@given(d=directives)
def test_a_directive_survives_the_trip_through_an_a2a_message(d: SwarmDirective) -> None:
    message = json.loads(json.dumps(directive_to_message(d)))  # what travels on the wire
    assert validate_message(message) is message  # a valid A2A 1.0 message
    assert message["contextId"] == f"swarm.{d.directive_id}"
    back = message_to_directive(message, target_node_id="node_receiver", now_ms=NOW)
    assert back == d


@SETTINGS
@given(kind=st.sampled_from(DirectiveKind), payload=st.dictionaries(st.text(max_size=10), json_value, max_size=4),
       priority=st.sampled_from(DirectivePriority), source=st.text(min_size=1, max_size=20),
       message_id=st.text(min_size=1, max_size=40), double_encoded=st.booleans())
def test_the_older_text_envelope_is_read_and_a_resend_is_the_same_directive(
        kind: DirectiveKind, payload: dict, priority: DirectivePriority, source: str, message_id: str,
        double_encoded: bool) -> None:
    envelope = {"kind": kind.value, "payload": json.dumps(payload) if double_encoded else payload,
                "priority": priority.value, "sourceNodeId": source}
    message = {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": json.dumps(envelope)}]}
    d = message_to_directive(message, target_node_id="node_receiver", now_ms=NOW)
    assert d is not None
    assert (d.kind, d.payload, d.priority, d.source_node_id) == (kind, payload, priority, source)
    assert d.target_node_id == "node_receiver" and 1 <= d.ttl_ms <= MAX_TTL_MS
    again = message_to_directive(message, target_node_id="node_receiver", now_ms=NOW + 5000)
    assert again.directive_id == d.directive_id  # the id comes from the message: a resend is a replay


def _json_text(value: Any) -> str:
    return json.dumps(value)


swarm_meta = st.fixed_dictionaries({}, optional={
    "swarmKind": st.one_of(st.sampled_from([k.value for k in DirectiveKind]), json_value),
    "swarmDirectiveId": st.one_of(ids, json_value),
    "swarmTtlMs": st.one_of(st.integers(min_value=-5, max_value=2 * MAX_TTL_MS), json_value),
    "swarmPriority": st.one_of(st.sampled_from([p.value for p in DirectivePriority]), json_value),
    "swarmSourceNodeId": json_value,
})
envelope_like = st.fixed_dictionaries({}, optional={
    "kind": st.one_of(st.sampled_from([k.value for k in DirectiveKind]), json_value),
    "payload": st.one_of(json_value, json_value.map(_json_text)),
    "priority": json_value, "sourceNodeId": json_value, "directiveId": json_value, "ttlMs": json_value,
    "createdAt": st.one_of(timestamps, json_value), "expiresAt": st.one_of(timestamps, json_value),
    "parentDirectiveId": json_value,
})
any_part = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=30), envelope_like.map(_json_text),
                                             json_value.map(_json_text))}),
    st.fixed_dictionaries({"data": st.one_of(envelope_like, json_value)}),
    st.fixed_dictionaries({"url": st.text(max_size=10)}),
)
messages = st.fixed_dictionaries(
    {"messageId": st.text(min_size=1, max_size=20), "role": st.just("ROLE_USER"),
     "parts": st.lists(any_part, min_size=1, max_size=3)},
    optional={"metadata": st.one_of(swarm_meta, st.dictionaries(st.text(max_size=8), json_value, max_size=3)),
              "contextId": st.text(max_size=10)})


@SETTINGS
@given(message=messages)
@example(message={"messageId": "m-deep", "role": "ROLE_USER", "parts": [{"text": json.dumps(
    {"kind": "query_resources", "payload": "[" * 5000 + "]" * 5000})}]})
@example(message={"messageId": "m-kind", "role": "ROLE_USER", "parts": [{"text": json.dumps({"kind": [1]})}]})
def test_any_valid_a2a_message_parses_to_a_directive_none_or_an_envelope_error(message: dict) -> None:
    try:
        validate_message(message)
    except InvalidParamsError:
        assume(False)
    try:
        d = message_to_directive(message, target_node_id="node_receiver", now_ms=NOW)
    except EnvelopeError as exc:
        assert str(exc)  # says which field
        return
    if d is None:
        return
    assert isinstance(d.kind, DirectiveKind) and isinstance(d.priority, DirectivePriority)
    assert isinstance(d.payload, dict)
    assert isinstance(d.directive_id, str) and 1 <= len(d.directive_id) <= 128
    assert 1 <= d.ttl_ms <= MAX_TTL_MS


# --- 2. the state machine ---------------------------------------------------------------------------
STALE_MS = 10_000
PEERS = ("node_p1", "node_p2", "node_p3")
SERVED_WHILE_DRAINING = (DirectiveKind.QUERY_RESOURCES, DirectiveKind.SYNC_STATE)
TERMINAL_ROW = {"completed", "failed", "cancelled", "timed_out"}
ROW_FOR_STATE = {
    "TASK_STATE_COMPLETED": {"completed"},
    "TASK_STATE_FAILED": {"failed", "timed_out"},
    "TASK_STATE_REJECTED": {"failed"},
    "TASK_STATE_CANCELED": {"cancelled"},
}
PAYLOADS = {
    DirectiveKind.QUERY_RESOURCES: {},
    DirectiveKind.SYNC_STATE: {"namespace": "memory",
                               "entries": {"k": {"value": 1, "version": {"hlc": 1, "origin": "node_p1"}}}},
    DirectiveKind.FORWARD_MESSAGE: {"targetSessionId": "s1", "message": {"hello": 1}},
    DirectiveKind.EXECUTE_TASK: {"command": ["true"]},
}


@dataclass
class PeerModel:
    registered: bool = False
    boot: int = 0
    counter: int = 0  # cumulative tokens_in the peer reports (starts again at 0 when it restarts)
    samples: int = 0  # every sample we received from it
    expected_usage: int = 0  # increase() over all its samples: the first is the baseline, a restart counts in full
    last_heard_ms: int | None = None


@dataclass
class DirectiveModel:
    directive: SwarmDirective
    admitted_as: str  # "run", "rejected", "expired"
    first_terminal: tuple[str, str] | None = None  # (status, completed_at) once the row ended


@dataclass
class World:
    peers: dict[str, PeerModel] = field(default_factory=lambda: {p: PeerModel() for p in PEERS})
    lifecycle: Lifecycle = Lifecycle.ACTIVE
    directives: dict[str, DirectiveModel] = field(default_factory=dict)
    heard_this_step: set[str] = field(default_factory=set)
    status_before: dict[str, NodeStatus] = field(default_factory=dict)
    restarted_at_ms: int = NOW
    judged_before_restart: set[str] = field(default_factory=set)  # verdicts a restart carries over
    seq: int = 0


class SwarmStateMachine(RuleBasedStateMachine):
    """One node's coordinator, its SQLite file and three fake peers, driven step by step. White-box:
    the machine drives the coordinator's collaborators (``_work``, ``_registry``, ``_store``)
    directly, at interleavings no network client could choose."""

    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="cortex-sm-"))
        self.clock = ManualClock(start_ms=NOW)
        self.world = World()
        self.coord: Coordinator | None = None
        self.tasks = TaskStore(self.clock, max_tasks=6)  # small: old tasks are evicted, as in a busy node
        self.run(self._open())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> None:
        store = await Store(self.tmp / "swarm.db").open()
        settings = NodeSettings(name="self", data_dir=self.tmp, stale_after_ms=STALE_MS, heartbeat_interval_ms=1000,
                                max_workers=2)
        coord = Coordinator(settings, store, self.clock, "node_self")

        async def leave(reason: str) -> None:  # no network in this test: peers are not real
            return None

        coord._membership.leave = leave  # type: ignore[method-assign]
        # this model keeps every registered peer: forgetting silent peers is proven with real
        # nodes (test_peer_attacks.py), so here it is out of reach
        coord._registry.forget_after_ms = coord._registry.never_heard_after_ms = 10 ** 15
        await coord.register_self()
        await coord._work.start()
        self.coord = coord

    async def _crash(self) -> None:
        """What kill -9 leaves: no worker finishes, nothing is recorded, the file is closed. The
        node's processes die first, as with kill -9 of the whole tree: the runtime's waits for
        them run on the ManualClock, which never moves here, so a process that outlived its
        SIGTERM would keep the crash waiting for ever."""
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        coord = self.coord
        coord._work._stopping = True  # the workers end with the node, whatever they were doing
        for worker in coord._work._workers:
            worker.cancel()
        await asyncio.wait_for(asyncio.gather(*coord._work._workers, return_exceptions=True), 30)
        await asyncio.wait_for(coord._work._ctx.agents.shutdown(grace=0.1), 30)
        await coord._store.close()

    def teardown(self) -> None:
        try:
            if self.coord is not None:
                self.run(self._crash())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        return self.coord._registry

    # --- membership -----------------------------------------------------------------------------
    @precondition(lambda self: not all(p.registered for p in self.world.peers.values()))
    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        """A peer becomes known (from a seed's card or a membership digest): once."""
        peer = data.draw(st.sampled_from([p for p, m in self.world.peers.items() if not m.registered]))
        port = 4300 + PEERS.index(peer)
        self.run(self.registry.register(SwarmNodeRegistration(id=peer, name=peer, endpoint=f"http://127.0.0.1:{port}")))
        self.world.peers[peer].registered = True

    def _beat_args(self, peer: str, tokens: int, restart: bool, draining: bool) -> tuple:
        m = self.world.peers[peer]
        restart = restart and m.samples > 0
        if restart:
            m.boot += 1
            m.counter = 0
        m.counter += tokens
        if m.samples > 0:
            m.expected_usage += m.counter if restart else tokens
        m.samples += 1
        m.last_heard_ms = self.clock.now_ms()
        self.world.heard_this_step.add(peer)
        self.world.judged_before_restart.discard(peer)
        lifecycle = Lifecycle.DRAINING if draining else Lifecycle.ACTIVE
        return (peer, NodeMetrics(cpu_percent=1.0), Snapshot(tokens_in=m.counter, memory_used_mb=100.0)), \
            {"boot_id": f"boot-{peer}-{m.boot}", "lifecycle": lifecycle}

    @precondition(lambda self: any(p.registered for p in self.world.peers.values()))
    @rule(data=st.data(), tokens=st.integers(min_value=0, max_value=500), restart=st.booleans(),
          draining=st.booleans())
    def heartbeat(self, data: st.DataObject, tokens: int, restart: bool, draining: bool) -> None:
        peer = data.draw(st.sampled_from([p for p, m in self.world.peers.items() if m.registered]))
        args, kwargs = self._beat_args(peer, tokens, restart, draining)
        self.run(self.registry.record_heartbeat(*args, **kwargs))

    @precondition(lambda self: any(p.registered for p in self.world.peers.values()))
    @rule(data=st.data(), tokens=st.integers(min_value=0, max_value=500), sweep_first=st.booleans())
    def heartbeat_while_sweeping(self, data: st.DataObject, tokens: int, sweep_first: bool) -> None:
        """The node's stale sweep and a heartbeat it receives run on one event loop, interleaved."""
        peer = data.draw(st.sampled_from([p for p, m in self.world.peers.items() if m.registered]))
        args, kwargs = self._beat_args(peer, tokens, False, False)

        async def both() -> None:
            beat = self.registry.record_heartbeat(*args, **kwargs)
            sweep = self.coord.sweep()
            await asyncio.gather(*((sweep, beat) if sweep_first else (beat, sweep)))

        self.run(both())

    @rule(seconds=st.sampled_from([0.5, 2.0, STALE_MS / 1000 / 2, STALE_MS / 1000, STALE_MS / 1000 + 0.5, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        self.run(self.coord.sweep())

    # --- our own lifecycle ----------------------------------------------------------------------
    @rule()
    def drain(self) -> None:
        try:
            self.run(self.coord.drain("state machine"))
        except PermissionError:
            assert self.world.lifecycle is Lifecycle.SEALED
            return
        assert self.world.lifecycle is not Lifecycle.SEALED, "a sealed node was drained"
        self.world.lifecycle = Lifecycle.DRAINING

    @rule()
    def undrain(self) -> None:
        try:
            self.run(self.coord.undrain("state machine"))
        except PermissionError:
            assert self.world.lifecycle is Lifecycle.SEALED
            return
        assert self.world.lifecycle is not Lifecycle.SEALED, "a sealed node was undrained"
        self.world.lifecycle = Lifecycle.ACTIVE

    @rule()
    def seal(self) -> None:
        self.run(self.coord.seal("state machine"))
        self.world.lifecycle = Lifecycle.SEALED

    @rule()
    def crash_and_restart(self) -> None:
        # a peer already judged before the crash stays judged; the grace is for the others
        self.world.judged_before_restart = {p for p, m in self.world.peers.items() if m.registered and
                                            self.registry.get(p).status is NodeStatus.DISCONNECTED}
        self.run(self._crash())
        self.run(self._open())
        self.tasks = TaskStore(self.clock, max_tasks=6)
        self.world.restarted_at_ms = self.clock.now_ms()
        # a sealed node that is started again rejoins; a drained one stays drained
        if self.world.lifecycle is Lifecycle.SEALED:
            row = self.registry.get("node_self")
            self.world.lifecycle = Lifecycle.DRAINING if row.drained else Lifecycle.ACTIVE
        assert self.coord.lifecycle is self.world.lifecycle

    # --- directives -----------------------------------------------------------------------------
    @rule(target=sent, kind=st.sampled_from(list(PAYLOADS)), expired=st.booleans(), wait=st.booleans())
    def dispatch(self, kind: DirectiveKind, expired: bool, wait: bool) -> str:
        w = self.world
        w.seq += 1
        now = self.clock.now_ms()
        created = now - 60_000 if expired else now
        d = SwarmDirective(directive_id=f"dir_sm_{w.seq:05d}", source_node_id="node_p1", target_node_id="node_self",
                           kind=kind, payload=PAYLOADS[kind], ttl_ms=30_000, created_at=format_ts(created))
        if w.lifecycle is Lifecycle.SEALED or (w.lifecycle is Lifecycle.DRAINING and kind not in SERVED_WHILE_DRAINING):
            admitted = "rejected"
        elif expired:
            admitted = "expired"
        else:
            admitted = "run"
        handle = self.run(self.coord._work.submit(d, self.tasks))
        note(f"{d.directive_id} {kind.value} lifecycle={w.lifecycle.value} -> {admitted}, task {handle.state}")
        w.directives[d.directive_id] = DirectiveModel(d, admitted)
        if admitted == "rejected":
            assert handle.state == "TASK_STATE_REJECTED", (admitted, handle.state)
        elif admitted == "expired":
            assert handle.state == "TASK_STATE_FAILED", handle.state
            assert self._row(d.directive_id)["status"] == "timed_out"
        if wait:
            assert self.run(handle.wait_terminal(timeout=5)), f"{d.directive_id} did not finish"
        return d.directive_id

    @rule(directive_id=sent)
    def replay(self, directive_id: str) -> None:
        """The same directive again (a dispatcher's resend after its crash, or an attacker's replay)."""
        model = self.world.directives[directive_id]
        rows_before = self._rows(directive_id)
        handle = self.run(self.coord._work.submit(model.directive, self.tasks))
        assert handle.task_id == directive_id
        assert self._rows(directive_id) == rows_before or rows_before[0]["status"] not in TERMINAL_ROW

    @rule(directive_id=sent)
    def cancel(self, directive_id: str) -> None:
        """CancelTask as the A2A server does it, for a task still in memory and not finished."""
        handle = self.tasks.get(directive_id)
        if handle is None or handle.is_terminal:
            return
        handle.cancel_requested.set()
        self.run(self.coord._work.cancel_task(handle))
        handle.finish("TASK_STATE_CANCELED")

    @rule()
    def let_the_workers_run(self) -> None:
        async def settle() -> None:
            for _ in range(200):
                if not self.coord._work.pending():
                    return
                await asyncio.sleep(0.005)

        self.run(settle())

    # --- invariants -----------------------------------------------------------------------------
    def _sql(self, sql: str, params: tuple = ()) -> list[tuple]:
        """The file as another reader sees it (committed data only), like the CLI or an operator."""
        with closing(sqlite3.connect(f"file:{self.tmp / 'swarm.db'}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute(sql, params).fetchall()

    def _rows(self, directive_id: str) -> list[dict[str, Any]]:
        return [{"status": r[0], "completedAt": r[1], "role": r[2]} for r in self._sql(
            "SELECT status, completed_at, role FROM swarm_directives WHERE directive_id = ?", (directive_id,))]

    def _row(self, directive_id: str) -> dict[str, Any]:
        rows = self._rows(directive_id)
        assert len(rows) == 1, f"{directive_id}: {len(rows)} rows"
        return rows[0]

    @invariant()
    def every_directive_has_one_row_and_one_terminal_state(self) -> None:
        if self.coord is None:
            return
        for directive_id, model in self.world.directives.items():
            row = self._row(directive_id)
            assert row["role"] == "inbound"
            handle = self.tasks.get(directive_id)
            if handle is not None and handle.is_terminal:
                assert row["status"] in ROW_FOR_STATE[handle.state], (directive_id, handle.state, row)
            if row["status"] in TERMINAL_ROW:
                seen = (row["status"], row["completedAt"])
                if model.first_terminal is None:
                    model.first_terminal = seen
                assert seen == model.first_terminal, f"{directive_id} ended twice: {model.first_terminal} then {seen}"
            if model.admitted_as != "run":
                assert row["status"] in TERMINAL_ROW, (directive_id, model.admitted_as, row)

    @invariant()
    def no_reconnect_without_a_heartbeat_and_no_verdict_within_stale_after(self) -> None:
        if self.coord is None:
            return
        w = self.world
        now = self.clock.now_ms()
        for peer, m in w.peers.items():
            if not m.registered:
                continue
            status = self.registry.get(peer).status
            before = w.status_before.get(peer)
            if before is NodeStatus.DISCONNECTED and status is not NodeStatus.DISCONNECTED \
                    and status is not NodeStatus.SEALED:
                assert peer in w.heard_this_step, f"{peer} went {before.value} -> {status.value} without a heartbeat"
            if status is NodeStatus.DISCONNECTED:
                grace_from = 0 if peer in w.judged_before_restart else w.restarted_at_ms
                seen = max(m.last_heard_ms or 0, grace_from)
                assert now - seen > STALE_MS, \
                    f"{peer} judged disconnected {now - seen} ms after its last heartbeat (stale_after {STALE_MS})"
            w.status_before[peer] = status
        w.heard_this_step.clear()

    @invariant()
    def the_registry_in_memory_is_the_registry_on_disk(self) -> None:
        if self.coord is None:
            return
        rows = self._sql("SELECT id, status, lifecycle, last_heartbeat FROM nodes")
        on_disk = {r[0]: r[1:] for r in rows}
        assert len(rows) == len(on_disk) == 1 + sum(m.registered for m in self.world.peers.values())  # no duplicate
        assert set(on_disk) == set(self.registry.nodes)
        for node_id, row in self.registry.nodes.items():
            memory = (row.status.value, row.lifecycle.value, format_ts(row.last_heartbeat_ms))
            assert on_disk[node_id] == memory, (node_id, "disk", on_disk[node_id], "memory", memory)

    @invariant()
    def the_event_trail_agrees_with_the_status(self) -> None:
        """The last liveness event of a peer (disconnected / recovered) says what its status says."""
        if self.coord is None:
            return
        for peer, m in self.world.peers.items():
            if not m.registered:
                continue
            last = self._sql("SELECT kind FROM swarm_node_events WHERE node_id = ? AND kind IN "
                             "('disconnected', 'recovered') ORDER BY id DESC LIMIT 1", (peer,))
            status = self.registry.get(peer).status
            if status is NodeStatus.DISCONNECTED:
                assert last == [("disconnected",)], (peer, status.value, last)
            elif last == [("disconnected",)]:
                assert status is NodeStatus.SEALED, f"{peer} is {status.value} but its last event is 'disconnected'"

    @invariant()
    def the_directive_workers_are_alive(self) -> None:
        if self.coord is None:
            return
        dead = [w for w in self.coord._work._workers if w.done()]
        assert not dead, f"directive workers died: {[w.exception() for w in dead if not w.cancelled()]}"

    @invariant()
    def our_lifecycle_is_what_the_operator_asked(self) -> None:
        if self.coord is not None:
            assert self.coord.lifecycle is self.world.lifecycle

    @invariant()
    def the_report_adds_up(self) -> None:
        if self.coord is None:
            return
        report = self.run(self.coord.get_resource_report())
        per = report.per_node
        assert report.total_nodes == len(per) == len(self.registry.nodes)
        assert report.online_nodes == sum(1 for n in per if n.status.is_live)
        assert report.total_tokens_in == sum(n.tokens_in for n in per)
        assert report.total_tokens_out == sum(n.tokens_out for n in per)
        assert report.total_tool_calls == sum(n.tool_calls for n in per)
        assert report.total_cost_usd == pytest.approx(sum(n.cost_usd for n in per), abs=1e-6)
        assert report.total_cpu_ms == pytest.approx(sum(n.cpu_ms for n in per), abs=0.2)
        assert report.total_peak_memory_mb == pytest.approx(sum(n.peak_memory_mb for n in per), abs=0.2)
        by_id = {n.node_id: n for n in per}
        for peer, m in self.world.peers.items():
            if m.registered:
                assert by_id[peer].tokens_in == m.expected_usage, (peer, by_id[peer].tokens_in, m.expected_usage)
        (rows,) = self._sql("SELECT COUNT(*) FROM swarm_directives")[0]
        assert rows == len(self.world.directives)
        by_status = dict(self._sql("SELECT status, COUNT(*) FROM swarm_directives GROUP BY status"))
        assert sum(by_status.values()) == rows


# The quick run explores a fixed set of 40 programs and reports a failure as found (no shrinking,
# which can take minutes); the slow run explores ten times more, randomly, and shrinks.
SwarmStateMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestSwarmStateMachine = SwarmStateMachine.TestCase


class LongSwarmStateMachine(SwarmStateMachine):
    pass


LongSwarmStateMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None, derandomize=False, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestLongSwarmStateMachine = pytest.mark.slow(LongSwarmStateMachine.TestCase)


# --- the interleavings the state machine found, as plain regression tests ----------------------------
async def _coordinator(tmp: Path, clock: ManualClock) -> Coordinator:
    store = await Store(tmp / "swarm.db").open()
    coord = Coordinator(NodeSettings(name="self", data_dir=tmp, stale_after_ms=STALE_MS, max_workers=2), store,
                        clock, "node_self")
    await coord.register_self()
    await coord._work.start()
    return coord


@pytest.mark.parametrize("sweep_first", [True, False], ids=["sweep-then-heartbeat", "heartbeat-then-sweep"])
async def test_a_heartbeat_received_while_the_sweep_runs_is_never_lost(tmp_path: Path, sweep_first: bool) -> None:
    """The sweep and the ingest of a heartbeat share the event loop. A peer that was stale and is
    heard from again during a sweep is connected afterwards, in memory, on disk and in its events."""
    clock = ManualClock(start_ms=NOW)
    coord = await _coordinator(tmp_path, clock)
    reg = coord._registry
    try:
        await reg.register(SwarmNodeRegistration(id="node_p1", name="p1", endpoint="http://127.0.0.1:4301"))
        await reg.record_heartbeat("node_p1", NodeMetrics(), Snapshot(), boot_id="b1")
        clock.advance(STALE_MS / 1000 + 1)  # stale now, not yet swept
        beat = reg.record_heartbeat("node_p1", NodeMetrics(), Snapshot(), boot_id="b1")
        sweep = coord.sweep()
        await asyncio.gather(*((sweep, beat) if sweep_first else (beat, sweep)))
        row = reg.get("node_p1")
        assert row.last_heartbeat_ms == clock.now_ms()
        assert row.status is NodeStatus.CONNECTED, f"{row.status.value} right after a heartbeat"
        with closing(sqlite3.connect(tmp_path / "swarm.db")) as db:
            on_disk = db.execute("SELECT status, last_heartbeat FROM nodes WHERE id = 'node_p1'").fetchone()
            events = [k for (k,) in db.execute("SELECT kind FROM swarm_node_events WHERE node_id = 'node_p1' AND kind"
                                               " IN ('disconnected', 'recovered') ORDER BY id")]
        assert on_disk == ("connected", format_ts(clock.now_ms()))
        assert events in ([], ["disconnected", "recovered"]), events
    finally:
        await coord._work.stop(1)
        await coord._store.close()


async def test_a_cancel_at_any_moment_leaves_one_terminal_state_and_a_working_node(tmp_path: Path) -> None:
    """CancelTask can arrive at any await of a directive's run, including inside the writes of its
    state and of its result. Whatever the moment: the task and the row agree, the row is terminal,
    and the node keeps writing (no transaction left open, no worker lost)."""
    clock = ManualClock(start_ms=NOW)
    coord = await _coordinator(tmp_path, clock)
    tasks = TaskStore(clock)
    problems = []
    try:
        for i in range(80):
            d = SwarmDirective(directive_id=f"dir_cancel_{i:03d}", source_node_id="node_p1",
                               target_node_id="node_self", kind=DirectiveKind.SYNC_STATE,
                               payload=PAYLOADS[DirectiveKind.SYNC_STATE], created_at=format_ts(clock.now_ms()))
            handle = await coord._work.submit(d, tasks)
            for _ in range(i % 40):  # let the worker get that far (every other round with a little real time)
                await asyncio.sleep(0.0001 if i % 2 else 0)
            if not handle.is_terminal:  # what the A2A server's CancelTask does
                handle.cancel_requested.set()
                await coord._work.cancel_task(handle)
                handle.finish("TASK_STATE_CANCELED")
            finished = await handle.wait_terminal(timeout=3)
            with closing(sqlite3.connect(tmp_path / "swarm.db")) as db:
                (status,) = db.execute("SELECT status FROM swarm_directives WHERE directive_id = ?",
                                       (d.directive_id,)).fetchone()
            alive = coord._work.workers_alive()
            if not finished or status not in ROW_FOR_STATE.get(handle.state, set()) or alive != 2:
                problems.append((d.directive_id, i % 40, handle.state, status, f"{alive} workers alive"))
                break
        assert not problems, problems
        # and the node still writes
        await coord._registry.register(SwarmNodeRegistration(id="node_p2", name="p2", endpoint="http://127.0.0.1:4302"))
    finally:
        await coord._work.stop(1)
        await coord._store.close()


async def test_a_cancel_after_the_result_is_stored_does_not_contradict_it(tmp_path: Path) -> None:
    """The result is committed, but the worker has not yet told the task (a slow disk flush, a busy
    loop) when CancelTask arrives. The task must then say what the row says: the work is done."""
    clock = ManualClock(start_ms=NOW)
    coord = await _coordinator(tmp_path, clock)
    real_write = coord._store.write

    async def slow_write(job):  # type: ignore[no-untyped-def]
        result = await real_write(job)  # committed
        await asyncio.sleep(0.05)  # ... and the caller hears of it a little later
        return result

    coord._store.write = slow_write  # type: ignore[method-assign]
    tasks = TaskStore(clock)
    try:
        d = SwarmDirective(directive_id="dir_cancel_late", source_node_id="node_p1", target_node_id="node_self",
                           kind=DirectiveKind.SYNC_STATE, payload=PAYLOADS[DirectiveKind.SYNC_STATE],
                           created_at=format_ts(clock.now_ms()))
        handle = await coord._work.submit(d, tasks)

        def stored() -> str | None:
            with closing(sqlite3.connect(tmp_path / "swarm.db")) as db:
                row = db.execute("SELECT status FROM swarm_directives WHERE directive_id = ?",
                                 (d.directive_id,)).fetchone()
            return row[0] if row else None

        for _ in range(400):  # until the result is committed and the task does not know it yet
            if stored() in TERMINAL_ROW or handle.is_terminal:
                break
            await asyncio.sleep(0.005)
        assert stored() == "completed" and not handle.is_terminal, (stored(), handle.state)
        handle.cancel_requested.set()  # CancelTask, as the A2A server does it
        await coord._work.cancel_task(handle)
        handle.finish("TASK_STATE_CANCELED")
        assert await handle.wait_terminal(timeout=3)
        assert stored() == "completed"
        assert handle.state == "TASK_STATE_COMPLETED", f"the task says {handle.state}, its row says completed"
    finally:
        coord._store.write = real_write  # type: ignore[method-assign]
        await coord._work.stop(1)
        await coord._store.close()


async def test_a_worker_cancelled_together_with_its_job_still_stops(tmp_path: Path) -> None:
    """A dispatcher's cancel and the node's shutdown can reach a worker before it runs again: two
    cancels arrive as one CancelledError. The worker must record the cancelled job and then stop,
    not swallow both and wait for the next job for ever (stop() would then never return)."""
    import sys

    clock = ManualClock(start_ms=NOW)
    coord = await _coordinator(tmp_path, clock)
    tasks = TaskStore(clock)
    work = coord._work
    try:
        d = SwarmDirective(directive_id="dir_double_cancel", source_node_id="node_p1", target_node_id="node_self",
                           kind=DirectiveKind.EXECUTE_TASK, created_at=format_ts(clock.now_ms()),
                           payload={"command": [sys.executable, "-c", "import time; time.sleep(30)"]})
        handle = await work.submit(d, tasks)
        for _ in range(500):  # until a worker runs it (real time: the command starts for real)
            if work.figures().running:
                break
            await asyncio.sleep(0.01)
        assert work.figures().running == 1
        await asyncio.wait_for(work.stop(0.05), 20)  # cancels the job, then its worker, at once
        assert all(w.done() for w in work._workers), "a worker swallowed the shutdown"
        assert await handle.wait_terminal(timeout=1) and handle.state == "TASK_STATE_CANCELED"
    finally:
        await coord._store.close()
