"""Load (slow): 10,000 directives from two dispatchers against one target at bounded concurrency.

Every directive has exactly one row on each side, in a terminal state, the same on both; nothing
is lost or duplicated; the target's memory levels off instead of growing with the count.

All three nodes share the address 127.0.0.1, so the per-client request limit (made for one client
per address) is turned off here: it is tested on its own in test_security.py.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.reliability.conftest import FAST
from tests.reliability.helpers import TERMINAL, Node, wait_connected
from tests.support.nodes import wait_for

TOTAL = 10_000
CONCURRENCY = 12  # requests in flight per dispatcher
MB = 1024 * 1024


def _one(node: Node, target: str, i: int) -> tuple[str, str]:
    if i % 3 == 0:
        body = {"targetNodeId": target, "kind": "execute_task", "payload": {"command": ["true"]}, "ttlMs": 60_000}
    else:
        body = {"targetNodeId": target, "kind": "query_resources", "ttlMs": 60_000}
    for attempt in range(3):
        try:
            status, doc = node.post("/api/swarm/directives", body)
            break
        except OSError:  # the client side of loopback ran out of something for a moment; the row decides
            if attempt == 2:
                raise
            time.sleep(0.2)
    assert status == 200, (status, doc)
    return doc["directiveId"], doc["status"]


def _rss(node: Node) -> int:
    return psutil.Process(node.proc.pid).memory_info().rss


def _send(dispatchers: list[Node], target: Node, count: int, start: int) -> list[tuple[str, str, str]]:
    """``count`` directives split over the dispatchers; returns (dispatcher name, id, status)."""
    def run(args: tuple[Node, int]) -> tuple[str, str, str]:
        node, i = args
        directive_id, status = _one(node, target.node_id, i)
        return node.name, directive_id, status

    jobs = [(dispatchers[i % len(dispatchers)], start + i) for i in range(count)]
    with ThreadPoolExecutor(CONCURRENCY * len(dispatchers)) as pool:
        return list(pool.map(run, jobs))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ten_thousand_directives_from_two_dispatchers(nodes, tmp_path: Path) -> None:
    cfg = tmp_path / "no-limit.json"
    cfg.write_text(json.dumps({"swarm": {"rateLimitPerSecond": 0}}))
    target = nodes("target", *FAST, "--config", str(cfg))
    d1 = nodes("dispatcher-1", *FAST, "--config", str(cfg), "--seed", target.url)
    d2 = nodes("dispatcher-2", *FAST, "--config", str(cfg), "--seed", target.url)
    wait_connected(target, d1, d2)
    dispatchers = [d1, d2]

    warm = _send(dispatchers, target, 300, 0)  # connections, caches, the first tasks: then the baseline
    time.sleep(1.0)
    baseline = _rss(target)
    started = time.monotonic()
    first = _send(dispatchers, target, TOTAL // 2, 300)
    half = _rss(target)
    second = _send(dispatchers, target, TOTAL - TOTAL // 2, 300 + TOTAL // 2)
    elapsed = time.monotonic() - started
    sent = warm + first + second
    assert len(sent) == TOTAL + 300

    # every answer was terminal, and each id is unique
    ids = [d for _, d, _ in sent]
    assert len(set(ids)) == len(ids)
    assert {s for _, _, s in sent} <= set(TERMINAL)
    not_completed = [x for x in sent if x[2] != "completed"]
    assert not not_completed, f"{len(not_completed)} did not complete, e.g. {not_completed[:3]}"

    # exactly one row per side, terminal, the same status on both sides
    by_dispatcher = {d.name: d for d in dispatchers}
    for d in dispatchers:
        assert d.query("SELECT COUNT(*) FROM (SELECT directive_id FROM swarm_directives GROUP BY directive_id, role"
                       " HAVING COUNT(*) > 1)") == [(0,)]
    inbound = dict(target.query("SELECT directive_id, status FROM swarm_directives WHERE role = 'inbound'"))
    assert target.query("SELECT COUNT(*) FROM (SELECT directive_id FROM swarm_directives GROUP BY directive_id, role"
                        " HAVING COUNT(*) > 1)") == [(0,)]
    assert len(inbound) == len(ids), (len(inbound), len(ids))
    for name, node in by_dispatcher.items():
        outbound = dict(node.query("SELECT directive_id, status FROM swarm_directives WHERE role = 'outbound'"))
        mine = [d for n, d, _ in sent if n == name]
        assert set(outbound) == set(mine), f"{name}: {len(set(mine) - set(outbound))} lost, " \
                                           f"{len(set(outbound) - set(mine))} unknown"
        mismatched = [d for d in mine if outbound[d] != inbound.get(d) or outbound[d] not in TERMINAL]
        assert not mismatched, f"{name}: {len(mismatched)} rows disagree, e.g. {mismatched[:3]}"
    for node in (target, d1, d2):
        assert node.query("SELECT COUNT(*) FROM swarm_directives WHERE status IN ('pending', 'dispatched')") == [(0,)]
        assert node.query("PRAGMA integrity_check") == [("ok",)]

    # memory levels off: the second 5,000 add (almost) nothing, and the end is near the baseline
    time.sleep(2.0)
    end = _rss(target)
    print(f"\n{TOTAL} directives in {elapsed:.1f} s ({TOTAL / elapsed:.0f}/s); target RSS baseline "
          f"{baseline / MB:.0f} MB, at half {half / MB:.0f} MB, at the end {end / MB:.0f} MB")
    assert end - half <= max(40 * MB, 0.5 * (half - baseline)), (baseline / MB, half / MB, end / MB)
    # the target keeps its last 5,000 A2A tasks in memory by design: that is most of the plateau
    assert end <= baseline + 80 * MB, (baseline / MB, end / MB)
    for d in dispatchers:
        assert d.get("/healthz")[0] == 200
    wait_for(lambda: target.get("/healthz")[1]["queue"]["queued"] == 0, what="the target's queue to drain")
