"""Benchmark 5: one fleet refresh of the running cortex-tui app (Textual ``run_test``).

    python -m bench.tui_bench < spec.json    (spec: {"nodes", "processes", "refreshes", "size"})

The app runs headless over a DemoClient whose large synthetic fleet has ``nodes`` nodes and
``processes`` processes (all but ten remote); its own poller is set to an hour, so the only
refreshes are the timed ones: ``CortexTui.apply_fleet(large_fleet(tick=i))``, each a new state
of the same fleet (figures change, structure stays). Per refresh:

``apply_ms``    the apply_fleet call itself (widgets updated in place);
``settled_ms``  apply_fleet plus the app working off what it queued (``pilot.pause()``:
                layout and repaint of the changed widgets), i.e. what one refresh costs.

Building a fleet state (the client's work, not the app's) is outside the timing. Memory is the
process's RSS: before the app starts, after the first fleet, and after the last refresh.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
from typing import Any

import psutil

MB = 1024 * 1024


class GcClock:
    """Time spent in the garbage collector, by generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.ms = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._t = 0.0
        self.active = False  # only collections inside the timed windows count

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._t = time.perf_counter()
        else:
            gen = info.get("generation", 0)
            self.ms[gen] += (time.perf_counter() - self._t) * 1000
            self.count[gen] += 1


def _rss() -> float:
    return psutil.Process().memory_info().rss / MB


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from cortex_tui.app import CortexTui
    from cortex_tui.client.demo import DemoClient, DemoFleet, large_fleet

    nodes, processes = int(spec.get("nodes", 1000)), int(spec.get("processes", 10_000))
    refreshes = int(spec.get("refreshes", 10))
    size = tuple(spec.get("size", (160, 48)))
    t = time.perf_counter()
    fleet0 = large_fleet(nodes=nodes, processes=processes, tick=0)
    build_ms = (time.perf_counter() - t) * 1000
    remote = sum(1 for p in fleet0.processes if p.node_id != fleet0.self_id)
    del fleet0
    rss_before = _rss()
    source = DemoClient(DemoFleet.large(nodes=nodes, processes=processes))
    app = CortexTui(source, interval_s=3600)
    apply_ms: list[float] = []
    settled_ms: list[float] = []
    t_start = time.perf_counter()
    async with app.run_test(size=size) as pilot:  # type: ignore[arg-type]
        deadline = time.monotonic() + 120
        while app.fleet is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        if app.fleet is None:
            raise RuntimeError("the app showed no fleet within 120 s")
        await pilot.pause()
        first_ms = (time.perf_counter() - t_start) * 1000
        rss_first = _rss()
        gc_clock = GcClock()
        gc.callbacks.append(gc_clock)
        for tick in range(1, refreshes + 1):
            fleet = large_fleet(nodes=nodes, processes=processes, tick=tick)
            gc_clock.active = True
            t0 = time.perf_counter()
            app.apply_fleet(fleet)
            t1 = time.perf_counter()
            await pilot.pause()
            t2 = time.perf_counter()
            gc_clock.active = False
            apply_ms.append((t1 - t0) * 1000)
            settled_ms.append((t2 - t0) * 1000)
            del fleet
        gc.callbacks.remove(gc_clock)
        rss_end = _rss()
        profile = await _profile_one(app, pilot, large_fleet(nodes=nodes, processes=processes, tick=refreshes + 1)) \
            if spec.get("profile") else None
    return {
        "profile": profile,
        "nodes": nodes, "processes": processes, "remote_processes": remote, "refreshes": refreshes,
        "terminal_size": list(size), "fleet_build_ms": build_ms, "first_fleet_shown_ms": first_ms,
        "apply_ms": _dist(apply_ms), "settled_ms": _dist(settled_ms),
        # the collector's share of the timed refreshes
        "gc_ms_per_refresh": round(sum(gc_clock.ms) / max(1, refreshes), 1),
        "gc_collections": {"gen0": gc_clock.count[0], "gen1": gc_clock.count[1], "gen2": gc_clock.count[2]},
        "gc_gen2_ms_per_refresh": round(gc_clock.ms[2] / max(1, refreshes), 1),
        "rss_before_app_mb": round(rss_before, 1), "rss_after_first_mb": round(rss_first, 1),
        "rss_end_mb": round(rss_end, 1), "app_mb": round(rss_end - rss_before, 1),
    }


async def _profile_one(app: Any, pilot: Any, fleet: Any, top: int = 12) -> dict[str, Any]:
    """cProfile over one more refresh (apply + settle), not counted above: where it goes."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    app.apply_fleet(fleet)
    await pilot.pause()
    prof.disable()
    total_ms = (time.perf_counter() - t) * 1000
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def short(path: str) -> str:
        for marker in ("cortex_tui/", "textual/", "rich/"):
            if marker in path:
                return marker + path.split(marker, 1)[1]
        return path.rsplit("/", 1)[-1]

    rows = [{"what": f"{func} ({short(file)}:{line})", "calls": nc, "self_ms": round(tt * 1000, 1),
             "cum_ms": round(ct * 1000, 1)} for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.items()]
    ours = [r for r in rows if r["what"].split("(", 1)[1].startswith("cortex_tui/")]
    waiting = [r for r in rows if "select.epoll" in r["what"] or "'select'" in r["what"]]
    busy = [r for r in rows if r not in waiting]
    return {"refresh_ms_under_profiler": round(total_ms, 1),
            # the event loop waiting (Textual paints on a timer): part of the settle time, not work
            "idle_ms_under_profiler": round(sum(r["self_ms"] for r in waiting), 1),
            "self_top": sorted(busy, key=lambda r: -r["self_ms"])[:top],
            "cumulative_cortex_tui": sorted(ours, key=lambda r: -r["cum_ms"])[:top]}


def _dist(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"median": float("nan"), "max": float("nan"), "min": float("nan"), "all": []}
    return {"median": statistics.median(ms), "max": max(ms), "min": min(ms), "all": [round(x, 2) for x in ms]}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(asyncio.run(measure(spec))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
