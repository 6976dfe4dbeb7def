"""Registry, snapshots, retention, stale sweep and the usage report — against a real SQLite file,
driven by a ManualClock."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_node.clock import ManualClock
from cortex_node.config import NodeSettings
from cortex_node.contracts import (
    Snapshot,
    SNAPSHOT_RETENTION,
    Lifecycle,
    NodeMetrics,
    NodeStatus,
    SwarmNodeRegistration,
    parse_ts,
)
from cortex_node.kernel.process_table import OsKernel
from cortex_node.store.db import Store
from cortex_node.store.snapshots import counter_increase
from cortex_node.swarm.coordinator import Coordinator
from cortex_node.swarm.node_registry import NodeRegistry

STALE_MS = 10_000


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store(tmp_path / "swarm.db").open()
    yield s
    await s.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=parse_ts("2026-11-26T23:30:00Z"))


async def make_registry(store: Store, clock: ManualClock) -> NodeRegistry:
    reg = NodeRegistry(store, clock, self_id="node_self", stale_after_ms=STALE_MS)
    await reg.load()
    await reg.register(SwarmNodeRegistration(id="node_self", name="self", endpoint="http://127.0.0.1:4220"), is_self=True)
    return reg


def peer(node_id: str = "node_peer", endpoint: str = "http://127.0.0.1:4221", **kw) -> SwarmNodeRegistration:
    return SwarmNodeRegistration(id=node_id, name=kw.pop("name", "peer"), endpoint=endpoint, **kw)


async def test_registration_is_idempotent(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    await reg.register(peer())
    clock.advance(1)
    await reg.register(peer(name="peer-renamed"))
    # without an id, the endpoint names the row
    await reg.register(SwarmNodeRegistration(name="peer-again", endpoint="http://127.0.0.1:4221/"))
    assert await reg.nodes_repo.count() == 2
    rows = {r.id: r for r in await reg.nodes_repo.load_all()}
    assert rows["node_peer"].name == "peer-again"
    # registered_at is the first registration, updated_at moves
    assert rows["node_peer"].registered_at_ms < rows["node_peer"].updated_at_ms


async def test_new_identity_at_a_known_endpoint_replaces_the_old_row(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    await reg.register(peer("node_old"))
    await reg.register(peer("node_new"))
    ids = {r.id for r in await reg.nodes_repo.load_all()}
    assert ids == {"node_self", "node_new"}
    assert [e.kind for e in await reg.history.list("node_new")] == ["registered", "superseded"]


async def test_a_card_alone_does_not_make_a_peer_connected(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    row = await reg.register(peer())
    assert row.status is NodeStatus.OFFLINE
    row = await reg.record_heartbeat("node_peer", NodeMetrics(), Snapshot())
    assert row.status is NodeStatus.CONNECTED


async def test_stale_sweep_uses_the_receivers_clock(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    await reg.register(peer())
    await reg.record_heartbeat("node_peer", NodeMetrics(), Snapshot())
    clock.advance(STALE_MS / 1000)  # exactly stale_after: not yet
    assert await reg.sweep() == []
    clock.advance(0.001)
    assert await reg.sweep() == ["node_peer"]
    assert reg.get("node_peer").status is NodeStatus.DISCONNECTED
    assert reg.get("node_self").status is NodeStatus.ONLINE  # we never judge ourselves stale
    assert await reg.sweep() == []  # a verdict is given once
    row = await reg.record_heartbeat("node_peer", NodeMetrics(), Snapshot())
    assert row.status is NodeStatus.CONNECTED
    kinds = [e.kind for e in await reg.history.list("node_peer")]
    assert kinds[:2] == ["recovered", "disconnected"]


async def test_peers_get_a_grace_period_after_our_restart(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    await reg.register(peer())
    await reg.record_heartbeat("node_peer", NodeMetrics(), Snapshot())
    clock.advance(3600)  # we were down for an hour
    restarted = await make_registry(store, clock)
    assert await restarted.sweep() == []
    clock.advance(STALE_MS / 1000 + 0.001)
    assert await restarted.sweep() == ["node_peer"]


async def test_registry_survives_reload(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    await reg.register(peer(labels={"rack": "a1"}, capabilities=["gpu"]))
    await reg.record_heartbeat("node_peer", NodeMetrics(cpu_percent=12.5, active_processes=3), Snapshot())
    await reg.set_lifecycle("node_peer", Lifecycle.DRAINING, "test")
    again = NodeRegistry(store, clock, self_id="node_self", stale_after_ms=STALE_MS)
    await again.load()
    row = again.get("node_peer")
    assert (row.labels, row.capabilities, row.metrics.cpu_percent, row.metrics.active_processes) == (
        {"rack": "a1"}, ["gpu"], 12.5, 3)
    assert row.status is NodeStatus.DRAINING and row.lifecycle is Lifecycle.DRAINING


async def test_snapshot_retention_keeps_the_newest_1440(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    total = SNAPSHOT_RETENTION + 60
    def job(conn):
        for i in range(total):
            clock.advance(1)
            reg.snapshots.append(conn, "node_self", Snapshot(tokens_in=i), clock.now_ms())

    await store.write(job)
    assert await reg.snapshots.count("node_self") == SNAPSHOT_RETENTION
    series = await reg.snapshots.series("node_self", SNAPSHOT_RETENTION)
    assert [s["tokensIn"] for s in series] == list(range(60, total))  # oldest first, oldest 60 gone
    # retention is per node: another node's rows are untouched
    await store.write(lambda conn: reg.snapshots.append(conn, "node_peer", Snapshot(tokens_in=1), clock.now_ms()))
    assert await reg.snapshots.count("node_peer") == 1


async def test_series_limit_and_since(store: Store, clock: ManualClock) -> None:
    reg = await make_registry(store, clock)
    start = clock.now_ms()
    def job(conn):
        for i in range(10):
            clock.advance(60)
            reg.snapshots.append(conn, "node_self", Snapshot(tokens_in=i), clock.now_ms())

    await store.write(job)
    assert [s["tokensIn"] for s in await reg.snapshots.series("node_self", 3)] == [7, 8, 9]
    since = start + 5 * 60_000
    assert [s["tokensIn"] for s in await reg.snapshots.series("node_self", 100, since)] == [4, 5, 6, 7, 8, 9]


def test_counter_increase_rules() -> None:
    assert counter_increase(None, 50) == 0  # the first sample is the baseline
    assert counter_increase(10, 25) == 15
    assert counter_increase(100, 20) == 20  # a drop is a reset: the new value counts in full
    assert counter_increase(10, 30, reset=True) == 30  # a new boot id is a reset even without a drop


async def test_report_sums_increases_across_a_reset_and_utc_midnight(tmp_path: Path, store: Store,
                                                                     clock: ManualClock) -> None:
    settings = NodeSettings(name="self", data_dir=tmp_path, stale_after_ms=STALE_MS)
    coord = Coordinator(settings, store, clock, "node_self")
    await coord.register_self()
    reg = coord._registry  # peers' heartbeats go straight to the registry: no network in this test
    await reg.register(peer())

    async def beat(tokens_in: int, cost: float, boot: str, mem: float) -> None:
        await reg.record_heartbeat("node_peer", NodeMetrics(), Snapshot(tokens_in=tokens_in, tokens_out=tokens_in // 2,
                                   cost_usd=cost, memory_used_mb=mem), boot_id=boot)

    await beat(100, 1.0, "b1", 500)   # 23:30 baseline
    clock.advance(10 * 60)
    await beat(150, 1.5, "b1", 800)   # 23:40 +50
    clock.advance(10 * 60)
    await beat(20, 0.2, "b1", 300)    # 23:50 dropped: reset, +20
    clock.advance(20 * 60)
    await beat(70, 0.7, "b1", 400)    # 00:10 next UTC day, +50
    clock.advance(60)
    await beat(5, 0.05, "b2", 350)    # restarted (new boot id), +5

    report = await coord.get_resource_report()
    by_id = {n.node_id: n for n in report.per_node}
    p = by_id["node_peer"]
    assert p.tokens_in == 125
    assert p.tokens_out == 25 + 10 + 25 + 2
    assert p.cost_usd == pytest.approx(0.5 + 0.2 + 0.5 + 0.05)
    assert p.peak_memory_mb == 800  # a max, not a sum
    assert report.total_tokens_in == sum(n.tokens_in for n in report.per_node)
    assert report.total_cost_usd == pytest.approx(sum(n.cost_usd for n in report.per_node))
    assert report.total_nodes == 2 and report.online_nodes == 2
    assert [e.kind for e in await reg.history.list("node_peer")][0] == "restarted"

    clock.advance(26 * 3600)  # everything falls out of the 24 h window
    report = await coord.get_resource_report()
    assert report.total_tokens_in == 0 and report.total_cost_usd == 0


async def test_the_sweep_prunes_usage_buckets_no_report_reaches(tmp_path: Path, store: Store,
                                                                 clock: ManualClock) -> None:
    """swarm_usage_hourly grew for ever: the sweep now drops buckets older than 48 h, about hourly."""
    coord = Coordinator(NodeSettings(name="self", data_dir=tmp_path, stale_after_ms=STALE_MS), store, clock,
                        "node_self")
    await coord.register_self()

    async def hours() -> list[str]:
        async with store.db.execute("SELECT hour_start FROM swarm_usage_hourly ORDER BY hour_start") as cur:
            return [r[0] for r in await cur.fetchall()]

    for _ in range(4):  # one beat a day for four days: four buckets
        await coord.heartbeat()
        clock.advance(24 * 3600)
    assert len(await hours()) == 4
    await coord.sweep()
    kept = await hours()
    # what a 24 h report (and its top-of-the-hour start) may still read is kept
    assert len(kept) == 2 and all(parse_ts(h) >= clock.now_ms() - 49 * 3600_000 for h in kept), kept
    await coord.heartbeat()
    clock.advance(24 * 3600)
    await coord.sweep()
    assert (await hours())[0] > kept[0] and len(await hours()) == 2


async def test_local_heartbeat_samples_real_figures(tmp_path: Path, store: Store, clock: ManualClock) -> None:
    settings = NodeSettings(name="self", data_dir=tmp_path, stale_after_ms=STALE_MS)
    coord = Coordinator(settings, store, clock, "node_self")
    await coord.register_self()
    node = await coord.heartbeat()
    m = node.metrics
    assert m.memory_total_mb > 0 and 0 < m.memory_used_mb <= m.memory_total_mb
    assert m.disk_total_mb > 0 and m.active_processes == 1
    clock.advance(1)
    await coord.heartbeat()
    assert len(await coord.node_series("node_self", SNAPSHOT_RETENTION)) == 2


async def test_kernel_today_figures_reset_at_utc_midnight(tmp_path: Path, store: Store, clock: ManualClock) -> None:
    kernel = OsKernel(node_id="node_self", clock=clock)
    proc = kernel.register("agent", role="agent", session_id="s1")
    kernel.add_usage(proc.pid, tokens_in=40, tokens_out=4, cost_usd=0.4)
    assert kernel.usage_today().tokens_in == 40
    clock.advance(31 * 60)  # past midnight UTC
    kernel.add_usage(proc.pid, tokens_in=2)
    assert kernel.usage_today().tokens_in == 2
    assert kernel.counters().tokens_in == 42  # the cumulative counter never resets
    assert kernel.active_sessions() == 1
