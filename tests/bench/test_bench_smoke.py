"""The benchmark suite at a tiny size, so that it cannot rot silently: every benchmark function
runs end to end (real node processes, reference servers, load generator, baselines) and its
result has the structure bench/report.py renders. No goal is asserted here; `make bench` measures.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import report, suite
from bench.run import parse_args

pytestmark = pytest.mark.timeout(90)

META = {"date": "2026-01-01 00:00 UTC", "mode": "smoke", "duration_s": 1.0, "nproc": 2, "cpu_model": "test",
        "memory_gb": 1, "platform": "test", "python": "3", "sqlite": "3", "packages": {}, "pinning": False,
        "load_start": [0, 0, 0], "load_end": [0, 0, 0], "git_commit": "0" * 40, "git_dirty": False}


def check_goals(result: dict[str, Any]) -> None:
    assert result["goals"], "every benchmark states its goals"
    for goal in result["goals"]:
        assert set(goal) >= {"goal", "value", "target", "unit", "op", "met"}
        assert isinstance(goal["met"], bool)


def check_load(run: dict[str, Any]) -> None:
    """One load generator window: requests went through, figures are numbers, answers were right."""
    assert run["requests"] > 0 and run["rate"] > 0
    assert run["errors"] == {} and run["check_failures"] == 0, run.get("check_example")
    assert run["checked"] > 0
    for key in ("p50", "p99", "max"):
        assert run["latency_ms"][key] > 0
    assert run["client_cpu_pct"] >= 0 and not math.isnan(run["server_cpu_us_per_req"])
    assert len(run["core_busy_pct"]) >= 1


def check_renders(result: dict[str, Any]) -> None:
    doc = json.loads(json.dumps({"meta": META, "benchmarks": {result["name"]: result}}))
    text = report.render(doc, "smoke.json", None)
    assert result["title"] in text and "## Goals" in text and "first recorded run" in text
    assert report.headline(doc), "the run-to-run comparison finds its figures"
    again = report.render(doc, "smoke-2.json", (Path("smoke.json"), doc))
    assert "Previous run: `bench/raw/smoke.json`" in again and "+0 %" in again


def check_profile(profile: dict[str, Any]) -> None:
    if profile.get("error"):  # py-spy missing or not permitted here: said, not hidden
        assert isinstance(profile["error"], str)
        return
    assert profile["samples_busy"] > 0
    for key in ("threads", "self_by_area", "inclusive_cortex", "self_top"):
        assert isinstance(profile[key], list)


def test_a2a_intake(tmp_path: Path) -> None:
    r = suite.bench_a2a_intake(tmp_path, duration_s=0.3, warmup_s=0.1, rounds=1, concurrencies=(1, 4),
                               profile=True, profile_s=1.0, pinning=False)
    with_sdk = importlib.util.find_spec("uvicorn") is not None  # the a2a-sdk reference runs on uvicorn
    assert ("sdk" in r["runs"]) is with_sdk
    for server in r["runs"]:
        for c in ("c1", "c4"):
            check_load(r["runs"][server][c])
    for c in ("c1", "c4"):
        assert r["ratios"][c]["node_vs_ceiling"] > 0
        assert (r["ratios"][c]["node_vs_sdk"] or 0) > 0 or not with_sdk
    check_profile(r["profile"])
    check_goals(r)
    check_renders(r)
    # without uvicorn the reference is missing, and the page says so instead of failing
    r["runs"].pop("sdk", None)
    r["missing"] = {"sdk": "uvicorn is not installed"}
    check_renders(r)


def test_dispatch(tmp_path: Path) -> None:
    r = suite.bench_dispatch(tmp_path, duration_s=0.3, warmup_s=0.1, rounds=1, concurrencies=(1, 4), profile=False,
                             pinning=False)
    for c in ("c1", "c4"):
        run = r["runs"][c]
        check_load(run)
        assert run["cpu_us_per_directive"]["node_a"] > 0 and run["cpu_us_per_directive"]["node_b"] > 0
    check_goals(r)
    check_renders(r)


def test_heartbeat(tmp_path: Path) -> None:
    r = suite.bench_heartbeat(tmp_path, rates=(20, 40), step_s=0.4, warmup_s=0.1, peers=10, connections=4,
                              baseline_s=0.2, profile=False, pinning=False)
    assert r["join"]["ok"] == 10 and r["join"]["nodes_listed"] == 11
    assert r["steps"] and all(s["mode"] == "open" for s in r["steps"])
    check_load(r["steps"][0])
    assert r["baselines"]["sqlite3"]["commits_per_s"] > 0 and r["baselines"]["aiosqlite"]["commits_per_s"] > 0
    assert "sustained_rate" in r and "ratios" in r
    check_goals(r)
    check_renders(r)


def test_store(tmp_path: Path) -> None:
    r = suite.bench_store(tmp_path, nodes=5, snapshots=120, reps=1, baseline_reps=1, pinning=False)
    assert r["data"]["snapshot_rows"] == 600 and r["data"]["usage_buckets"] >= 5 * 2
    q = r["queries"]
    assert q["report_nodes"] == 5 and q["series_rows"] == 120 and q["node_list_nodes"] == 5 and q["load_all_rows"] == 5
    for key in ("report", "usage_since", "series", "node_list", "load_all"):
        assert q[key]["median_ms"] > 0
    assert r["baselines"]["group_by_24h"]["rows"] == 5 and r["baselines"]["latest_per_node"]["rows"] == 5
    check_goals(r)
    check_renders(r)


def test_tui(tmp_path: Path) -> None:
    r = suite.bench_tui(tmp_path, nodes=20, processes=100, refreshes=2, profile=True, pinning=False)
    assert r["profile"]["self_top"] and r["profile"]["refresh_ms_under_profiler"] > 0
    assert r["nodes"] == 20 and r["processes"] == 100 and len(r["settled_ms"]["all"]) == 2
    assert r["settled_ms"]["median"] >= r["apply_ms"]["median"] > 0
    assert r["rss_end_mb"] > 0
    check_goals(r)
    check_renders(r)


def test_idle(tmp_path: Path) -> None:
    r = suite.bench_idle(tmp_path, peers=3, interval_s=1.0, measure_s=1.0, settle_s=0.2, pinning=False)
    assert r["nodes_listed"] == 4 and r["connected_peers"] == 3
    assert r["rss_mb_max"] > 0 and r["cpu_pct"] >= 0
    assert r["simulator"]["sent"].get("ok", 0) >= 3
    check_goals(r)
    check_renders(r)


def test_the_command_line() -> None:
    args = parse_args(["--only", "store,tui", "--only", "idle", "--quick"])
    assert args.names == ["store", "tui", "idle"] and args.quick
    assert parse_args([]).names == list(suite.BENCHMARKS)
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
