"""bench/RESULTS.md from one run's results (and the previous recorded run, for what changed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

NOISE_PCT = 15.0  # absolute figures drift this much between runs on these machines


def _n(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if digits == 0:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    return str(v)


def _ms(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _x(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.3f}×" if v < 1 else f"{v:.2f}×"


def _others(x: dict[str, Any]) -> str:
    return f"{_n(x.get('others_on_server_core_pct'))} / {_n(x.get('others_on_client_core_pct'))}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _goals(goals: list[dict[str, Any]]) -> list[str]:
    rows = []
    for g in goals:
        unit = g["unit"]
        value = _x(g["value"]) if unit.startswith("×") else f"{_n(g['value'], 2 if (g['value'] or 0) < 10 else 0)} {unit}"
        target = f"{g['op']} {_n(g['target'], 2 if g['target'] < 10 else 0)} {'' if unit.startswith('×') else unit}"
        rows.append([g["goal"], value, target.strip(), "**yes**" if g["met"] else "**no**"])
    return _table(["goal", "measured", "target", "met"], rows)


def _profile(p: dict[str, Any] | None, title: str) -> list[str]:
    if not p:
        return []
    if p.get("error"):
        return [f"{title}: not profiled ({p['error']}).", ""]
    lines = [f"**{title}** — py-spy{' --native' if p.get('native') else ''}, {p['samples_busy']} busy samples "
             f"({p.get('load', '')}); "
             f"threads: " + ", ".join(f"{t['what']} {t['pct']} %" for t in p["threads"]) + ".", ""]
    under = p.get("under_profiler")
    if under and under.get("rate"):
        lines += [f"(Under the profiler: {_n(under['rate'])} req/s, {_n(under['server_cpu_us_per_req'])} µs CPU per "
                  "request; these are not the figures above.)", ""]
    areas = ", ".join(f"{a['what']} {a['pct']} %" for a in p["self_by_area"][:10])
    lines += [f"Self time by module: {areas}.", ""]
    rows = [[f"`{a['what']}`", f"{a['pct']} %"] for a in p["inclusive_cortex"][:12]]
    lines += _table(["cortex_node function (inclusive)", "share of busy samples"], rows)
    rows = [[f"`{a['what']}`" if "(" in a["what"] and ".py" in a["what"] else a["what"], f"{a['pct']} %"]
            for a in p["self_top"][:10]]
    lines += _table(["hottest leaf frames (self; C code charged to GC, SQLite, system calls or uvloop)", "share"],
                    rows)
    return lines


# --- one section per benchmark -------------------------------------------------------------------
def _a2a(r: dict[str, Any]) -> list[str]:
    cfg = r["config"]
    lines = [f"JSON-RPC `SendMessage` on `POST /a2a`, closed loop, {cfg['rounds']} round(s) of {cfg['duration_s']:g} s "
             f"(after {cfg['warmup_s']:g} s warm-up) per point, the better round kept; servers on CPU 0, the load "
             "generator on CPU 1. (a) node: a `query_resources` directive per request (fresh directive id, persisted "
             "as in production); (b) a2a-sdk: DefaultRequestHandler + create_jsonrpc_routes on Starlette, uvicorn, "
             "one worker, an echo executor (task + artifact + completed); (c) a bare aiohttp handler that parses the "
             "JSON and returns a fixed Task — the ceiling of the node's HTTP stack, on the node's event loop. The "
             "load generator is raw HTTP/1.1 keep-alive over asyncio (uvloop where installed)."
             + (" Event loops: " + "; ".join(f"{k} {v}" for k, v in cfg["event_loops"].items()) + "."
                if cfg.get("event_loops") else ""), ""]
    names = {"node": "(a) node", "sdk": "(b) a2a-sdk echo", "aiohttp": "(c) bare aiohttp"}
    rows = []
    for c in cfg["concurrencies"]:
        for key in ("node", "sdk", "aiohttp"):
            if key not in r["runs"]:
                rows.append([names[key], str(c), f"not run: {r.get('missing', {}).get(key, '?')}"] + [""] * 6)
                continue
            x = r["runs"][key][f"c{c}"]
            rows.append([names[key], str(c), _n(x["rate"]), _ms(x["latency_ms"]["p50"]), _ms(x["latency_ms"]["p99"]),
                         _n(x["server_cpu_us_per_req"]), _n(x["client_cpu_pct"]) + (" ⚠" if x["client_bound"] else ""),
                         _others(x), " / ".join(_n(v) for v in x.get("round_rates", []))])
    lines += _table(["server", "conc.", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "client CPU %",
                     "others on server / client core %", "rounds req/s"], rows)
    rows = [[str(c), _x(r["ratios"][f"c{c}"]["node_vs_sdk"]), _x(r["ratios"][f"c{c}"]["node_vs_ceiling"]),
             _x(r["ratios"][f"c{c}"]["sdk_vs_ceiling"]), _x(r["ratios"][f"c{c}"]["node_cpu_vs_ceiling_cpu"])]
            for c in cfg["concurrencies"]]
    lines += _table(["conc.", "node ÷ (b) req/s", "node ÷ (c) req/s", "(b) ÷ (c) req/s", "node CPU/req ÷ (c) CPU/req"],
                    rows)
    return lines + _goals(r["goals"]) + _profile(r.get("profile"), "Where the node's time goes")


def _dispatch(r: dict[str, Any]) -> list[str]:
    cfg = r["config"]
    lines = ["`POST /api/swarm/directives` on node A with `{targetNodeId: B, kind: query_resources, wait: true}`: A "
             "persists the directive, sends it over A2A, B persists and runs it, A records the result and answers. "
             f"Closed loop, {cfg['rounds']} round(s) of {cfg['duration_s']:g} s per point, the better kept; "
             f"{cfg['placement']}.", ""]
    rows = []
    for c in cfg["concurrencies"]:
        x = r["runs"][f"c{c}"]
        rows.append([str(c), _n(x["rate"]), _ms(x["latency_ms"]["p50"]), _ms(x["latency_ms"]["p99"]),
                     _n(x["cpu_us_per_directive"]["node_a"]), _n(x["cpu_us_per_directive"]["node_b"]),
                     _n(x["implied_rate_one_core_each"]),
                     _n(x["client_cpu_pct"]) + (" ⚠" if x.get("client_bound") else ""),
                     _others(x), " / ".join(_n(v) for v in x.get("round_rates", []))])
    lines += _table(["conc.", "directives/s", "p50 ms", "p99 ms", "A CPU µs/dir.", "B CPU µs/dir.",
                     "implied /s with a core each", "client CPU %", "others on server / client core %", "rounds /s"], rows)
    lines += ["“implied /s with a core each” = 1e6 ÷ the larger of A's and B's CPU µs per directive: the rate if A "
              "and B ran on machines of their own, as in production.", ""]
    return (lines + _goals(r["goals"]) + _profile(r.get("profile_a"), "Node A (dispatcher)")
            + _profile(r.get("profile_b"), "Node B (receiver)"))


def _heartbeat(r: dict[str, Any]) -> list[str]:
    cfg = r["config"]
    b = r["baselines"]
    lines = [f"`SwarmHeartbeat` JSON-RPC calls from {cfg['peers']:,} simulated peers (distinct node ids and endpoints, "
             "payload built by `Membership.heartbeat_payload`, 2 agent processes each), open loop at stepped offered "
             f"rates over {cfg['connections']} connections, {cfg['step_s']:g} s per step; latency counts from the time "
             "a request was due (the generator wakes at least every millisecond, so up to 1 ms of it is the "
             "generator's). The node records each (nodes row + snapshot + hourly bucket) and answers with its "
             f"membership digest. Join: {r['join']['ok']:,} of {r['join']['peers']:,} peers registered in "
             f"{r['join']['seconds']:g} s. The node's own heartbeat interval is set to an hour so that its fan-out "
             "to the simulated (unreachable) peers stays out of the window.", ""]
    rows = []
    for s in r["steps"]:
        rows.append([_n(s["offered_rate"]), _n(s["rate"]), _ms(s["latency_ms"]["p50"]), _ms(s["latency_ms"]["p99"]),
                     _n(s["server_cpu_us_per_req"]), _n(s["server_cpu_pct"]),
                     _n(s["client_cpu_pct"]) + (" ⚠" if s.get("client_bound") else ""),
                     _others(s), "yes" if s["ok"] else "**no**"])
    lines += _table(["offered /s", "achieved /s", "p50 ms", "p99 ms", "server CPU µs/hb", "server CPU %",
                     "client CPU %", "others on server / client core %", "p99 < limit, no shortfall"], rows)
    rows = [["sustained (p99 < %g ms)" % cfg["p99_limit_ms"], _n(r["sustained_rate"]), "–"],
            ["CPU-implied maximum (1e6 ÷ µs per heartbeat)", _n(r.get("implied_max_rate")), "–"],
            ["SQLite single-row commits, sqlite3", _n(b["sqlite3"]["commits_per_s"]),
             _x(r["ratios"]["sustained_vs_sqlite3"])],
            ["SQLite single-row commits, aiosqlite (3 awaits per commit)", _n(b["aiosqlite"]["commits_per_s"]),
             _x(r["ratios"]["sustained_vs_aiosqlite"])]]
    lines += _table(["rate", "per second", "node sustained ÷ this"], rows)
    return lines + _goals(r["goals"]) + _profile(r.get("profile"), "Where the node's time goes")


def _store(r: dict[str, Any]) -> list[str]:
    d, q, b = r["data"], r["queries"], r["baselines"]
    lines = [f"{d['nodes']:,} nodes × {r['config']['snapshots_per_node']:,} snapshots = {d['snapshot_rows']:,} rows "
             f"(+ {d['usage_buckets']:,} hourly buckets, {d['db_mb']:,} MB), one minute apart, inserted in time "
             f"order; built in {d['build_s']:g} s. Median of {r['config']['reps']} warm calls (first call apart), "
             "through the node's own classes on aiosqlite.", ""]
    rows = [
        ["24 h fleet report: `Coordinator.get_resource_report()`", _ms(q["report"]["median_ms"]),
         _ms(q["report"]["first_ms"]), f"{q['report_nodes']:,} nodes"],
        ["… its SQL alone: `SnapshotRepo.usage_since()`", _ms(q["usage_since"]["median_ms"]),
         _ms(q["usage_since"]["first_ms"]), ""],
        ["… plus the JSON body of `GET /api/swarm/report`", _ms(q["report_json"]["median_ms"]),
         _ms(q["report_json"]["first_ms"]), f"{q['report_bytes']:,} bytes"],
        ["one node's series: `SnapshotRepo.series(id, 1440)`", _ms(q["series"]["median_ms"]),
         _ms(q["series"]["first_ms"]), f"{q['series_rows']:,} rows"],
        ["node list, registry in memory: `Coordinator.list_nodes()` (list + to_wire)",
         _ms(q["node_list"]["median_ms"]), _ms(q["node_list"]["first_ms"]), f"{q['node_list_nodes']:,} nodes"],
        ["… plus the JSON body of `GET /api/swarm/nodes`", _ms(q["node_list_json"]["median_ms"]),
         _ms(q["node_list_json"]["first_ms"]), f"{q['node_list_bytes']:,} bytes"],
        ["`NodeRepo.load_all()` (start-up)", _ms(q["load_all"]["median_ms"]), _ms(q["load_all"]["first_ms"]),
         f"{q['load_all_rows']:,} rows"],
        ["baseline: plain GROUP BY node_id over the 24 h of snapshots (sqlite3)", _ms(b["group_by_24h"]["median_ms"]),
         _ms(b["group_by_24h"]["first_ms"]), f"{b['group_by_24h']['rows']:,} rows"],
        ["baseline: latest row per node (sqlite3)", _ms(b["latest_per_node"]["median_ms"]),
         _ms(b["latest_per_node"]["first_ms"]), f"{b['latest_per_node']['rows']:,} rows"],
    ]
    lines += _table(["query", "median ms", "first ms", "size"], rows)
    ra = r["ratios"]
    lines += [f"Ratios: report ÷ GROUP BY baseline {_x(ra['report_vs_group_by'])}; node list ÷ latest-per-node "
              f"baseline {_x(ra['node_list_vs_latest_per_node'])}; load_all ÷ latest-per-node "
              f"{_x(ra['load_all_vs_latest_per_node'])}.", ""]
    return lines + _goals(r["goals"])


def _tui(r: dict[str, Any]) -> list[str]:
    lines = [f"`{r['config']['api']}` on the running app in `run_test` ({r['terminal_size'][0]}×"
             f"{r['terminal_size'][1]}), {r['nodes']:,} nodes and {r['processes']:,} processes "
             f"({r['remote_processes']:,} remote), {r['refreshes']} consecutive refreshes of the same fleet with new "
             "figures. “settled” = apply_fleet plus the app working off what it queued (`pilot.pause()`).", ""]
    rows = [["apply_fleet call", _ms(r["apply_ms"]["median"]), _ms(r["apply_ms"]["min"]), _ms(r["apply_ms"]["max"])],
            ["apply + settle (one refresh)", _ms(r["settled_ms"]["median"]), _ms(r["settled_ms"]["min"]),
             _ms(r["settled_ms"]["max"])],
            ["first fleet shown after start", _ms(r["first_fleet_shown_ms"]), "", ""],
            ["building one FleetState (client side, not timed above)", _ms(r["fleet_build_ms"]), "", ""]]
    lines += _table(["", "median ms", "min ms", "max ms"], rows)
    lines += [f"Memory (RSS): {r['rss_before_app_mb']} MB before the app, {r['rss_after_first_mb']} MB with the first "
              f"fleet shown, {r['rss_end_mb']} MB after the last refresh: the app holds {r['app_mb']} MB.", ""]
    if "gc_ms_per_refresh" in r:
        gcs = r["gc_collections"]
        lines += [f"Garbage collector during the timed refreshes: {_ms(r['gc_ms_per_refresh'])} ms per refresh "
                  f"({_ms(r['gc_gen2_ms_per_refresh'])} ms of it in full, generation-2 collections; collections: "
                  f"{gcs['gen0']} / {gcs['gen1']} / {gcs['gen2']} by generation, inside the timed windows).", ""]
    lines += _goals(r["goals"])
    p = r.get("profile")
    if p:
        idle = p.get("idle_ms_under_profiler")
        lines += [f"**Where one refresh goes** — cProfile over one more refresh ({_ms(p['refresh_ms_under_profiler'])} "
                  "ms under the profiler, which slows it"
                  + (f"; {_ms(idle)} ms of it the event loop waiting in epoll, as Textual paints on a timer"
                     if idle else "") + "):", ""]
        lines += _table(["cortex_tui function (cumulative)", "calls", "cum ms", "self ms"],
                        [[f"`{x['what']}`", _n(x["calls"]), _ms(x["cum_ms"]), _ms(x["self_ms"])]
                         for x in p["cumulative_cortex_tui"][:10]])
        lines += _table(["hottest functions (self)", "calls", "self ms"],
                        [[f"`{x['what']}`", _n(x["calls"]), _ms(x["self_ms"])] for x in p["self_top"][:10]])
    return lines


def _idle(r: dict[str, Any]) -> list[str]:
    sim = r.get("simulator", {})
    lines = [f"A node at the default heartbeat interval with {r['config']['peers']} simulated peers (one process, "
             f"each with its own endpoint that answers the node's heartbeats and card fetches), each heartbeating "
             f"every {r['config']['peer_interval_s']:g} s, spread over the interval; measured over "
             f"{r['measured_s']:g} s after all had joined ({r.get('connected_peers')} listed as connected).", ""]
    rows = [["CPU", f"{_n(r['cpu_pct'], 2)} % ({r['cpu_s']} s)"],
            ["RSS", f"{r['rss_mb_start']} MB at the start, {r['rss_mb_end']} MB at the end, max {r['rss_mb_max']} MB"],
            ["simulator sent / received", f"{json.dumps(sim.get('sent'))} / {json.dumps(sim.get('received'))}"]]
    lines += _table(["", "measured"], rows)
    return lines + _goals(r["goals"])


SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "a2a_intake": _a2a, "dispatch": _dispatch, "heartbeat": _heartbeat, "store": _store, "tui": _tui, "idle": _idle,
}


# --- headline figures and what changed -------------------------------------------------------------
def headline(results: dict[str, Any]) -> dict[str, float]:
    """The figures compared from run to run (name -> value)."""
    b = results.get("benchmarks", {})
    out: dict[str, float] = {}

    def put(name: str, fn: Callable[[], Any]) -> None:
        try:
            v = fn()
        except (KeyError, TypeError, IndexError):
            return
        if isinstance(v, (int, float)) and v == v:
            out[name] = float(v)

    for c in (1, 32):
        put(f"A2A intake c{c}: node req/s", lambda: b["a2a_intake"]["runs"]["node"][f"c{c}"]["rate"])
        put(f"A2A intake c{c}: node p99 ms", lambda: b["a2a_intake"]["runs"]["node"][f"c{c}"]["latency_ms"]["p99"])
        put(f"A2A intake c{c}: node CPU µs/req",
            lambda: b["a2a_intake"]["runs"]["node"][f"c{c}"]["server_cpu_us_per_req"])
        put(f"A2A intake c{c}: a2a-sdk req/s", lambda: b["a2a_intake"]["runs"]["sdk"][f"c{c}"]["rate"])
        put(f"A2A intake c{c}: ceiling req/s", lambda: b["a2a_intake"]["runs"]["aiohttp"][f"c{c}"]["rate"])
        put(f"A2A intake c{c}: node ÷ ceiling", lambda: b["a2a_intake"]["ratios"][f"c{c}"]["node_vs_ceiling"])
        put(f"A2A intake c{c}: node ÷ a2a-sdk", lambda: b["a2a_intake"]["ratios"][f"c{c}"]["node_vs_sdk"])
        put(f"Dispatch c{c}: directives/s", lambda: b["dispatch"]["runs"][f"c{c}"]["rate"])
        put(f"Dispatch c{c}: p99 ms", lambda: b["dispatch"]["runs"][f"c{c}"]["latency_ms"]["p99"])
    put("Dispatch c32: A CPU µs/directive", lambda: b["dispatch"]["runs"]["c32"]["cpu_us_per_directive"]["node_a"])
    put("Dispatch c32: B CPU µs/directive", lambda: b["dispatch"]["runs"]["c32"]["cpu_us_per_directive"]["node_b"])
    put("Heartbeat: sustained /s", lambda: b["heartbeat"]["sustained_rate"])
    put("Heartbeat: CPU µs/heartbeat", lambda: b["heartbeat"]["cpu_us_per_heartbeat"])
    put("Heartbeat: sqlite3 commits/s", lambda: b["heartbeat"]["baselines"]["sqlite3"]["commits_per_s"])
    put("Heartbeat: aiosqlite commits/s", lambda: b["heartbeat"]["baselines"]["aiosqlite"]["commits_per_s"])
    put("Heartbeat: sustained ÷ aiosqlite", lambda: b["heartbeat"]["ratios"]["sustained_vs_aiosqlite"])
    for key, label in (("report", "report ms"), ("series", "series ms"), ("node_list", "node list ms"),
                       ("node_list_json", "node list + JSON ms"), ("load_all", "load_all ms")):
        put(f"Store: {label}", lambda key=key: b["store"]["queries"][key]["median_ms"])
    put("Store: GROUP BY baseline ms", lambda: b["store"]["baselines"]["group_by_24h"]["median_ms"])
    put("Store: latest-per-node baseline ms", lambda: b["store"]["baselines"]["latest_per_node"]["median_ms"])
    put("TUI: refresh ms", lambda: b["tui"]["settled_ms"]["median"])
    put("TUI: app MB", lambda: b["tui"]["app_mb"])
    put("Idle: CPU %", lambda: b["idle"]["cpu_pct"])
    put("Idle: RSS max MB", lambda: b["idle"]["rss_mb_max"])
    return out


def previous_run(raw_dir: Path, current: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The newest full run recorded before ``current`` (full runs are ``<UTC time>.json``)."""
    files = sorted(p for p in raw_dir.glob("*.json") if re.fullmatch(r"\d{8}T\d{6}Z", p.stem))
    for p in reversed(files):
        if current is not None and p.name >= current.name:
            continue
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("meta", {}).get("mode") == "full":
            return p, doc
    return None


def _changes(results: dict[str, Any], prev: tuple[Path, dict[str, Any]] | None) -> list[str]:
    lines = ["## What changed since the last recorded run", ""]
    if prev is None:
        return lines + ["This is the first recorded run: there is nothing to compare with yet. Later runs list here "
                        "every headline figure against this one.", ""]
    path, old = prev
    om, nm = old.get("meta", {}), results.get("meta", {})
    lines += [f"Previous run: `bench/raw/{path.name}` ({om.get('date')}, commit `{om.get('git_commit', '?')[:10]}`"
              f"{' + local changes' if om.get('git_dirty') else ''}); this run: commit "
              f"`{nm.get('git_commit', '?')[:10]}`{' + local changes' if nm.get('git_dirty') else ''}. Changes beyond "
              f"±{NOISE_PCT:g} % (the run-to-run drift of absolute figures here) are marked; ratios against the "
              "same run's references are the figures to trust.", ""]
    a, b = headline(old), headline(results)
    rows = []
    for key in b:
        if key not in a:
            rows.append([key, "–", _n(b[key], 2 if b[key] < 10 else 0), "new"])
            continue
        before, now = a[key], b[key]
        pct = 100.0 * (now - before) / before if before else float("nan")
        mark = " **beyond noise**" if abs(pct) > NOISE_PCT else ""
        rows.append([key, _n(before, 2 if before < 10 else 0), _n(now, 2 if now < 10 else 0), f"{pct:+.0f} %{mark}"])
    return lines + _table(["figure", "previous", "now", "change"], rows)


# --- the page --------------------------------------------------------------------------------------
def render(results: dict[str, Any], raw_name: str, prev: tuple[Path, dict[str, Any]] | None) -> str:
    m = results["meta"]
    lines = ["# Benchmark results", "",
             f"Recorded by `make bench` (`python -m bench.run`) on {m['date']} in {m['duration_s']:.0f} s; raw figures "
             f"in `bench/raw/{raw_name}`. Commit `{m.get('git_commit', '?')[:10]}`"
             f"{' with local changes' if m.get('git_dirty') else ''}.", "",
             "How to read it: these 2-core machines are noisy and absolute figures drift by about ±15 % between runs, "
             "so every benchmark measures its references in the same run on the same machine and the ratios are the "
             "figures to judge by. Servers run pinned to CPU 0 and the load generator to CPU 1 "
             f"({'taskset' if m['pinning'] else 'no taskset here: unpinned'}); the load generator reports its own "
             "CPU use, and a figure taken with the client above 90 % of its core would be the client's (marked ⚠). "
             "“others on server / client core %” is how busy CPU 0 (CPU 1) was with processes other than the measured "
             "server (the load generator) in the same window: other work on a shared machine slows a run, never speeds "
             "it up, so a figure with a large share there is a low one. Before each benchmark the run waits (up to "
             "30 s) for the machine to be quiet.", ""]
    if m.get("concurrent_run"):
        lines += [f"**Warning:** {m['concurrent_run']}.", ""]
    lines += ["## Machine", ""]
    rows = [["CPUs (nproc)", str(m["nproc"])], ["CPU", m.get("cpu_model", "?")], ["memory", f"{m['memory_gb']} GB"],
            ["OS", m["platform"]], ["Python", m["python"]], ["SQLite", m["sqlite"]],
            ["packages", ", ".join(f"{k} {v}" for k, v in m["packages"].items())],
            ["load average at start / end", f"{m['load_start']} / {m['load_end']}"]]
    lines += _table(["", ""], rows)
    lines += ["## Goals", ""]
    rows = []
    for name, r in results["benchmarks"].items():
        if "error" in r:
            rows.append([name, f"did not run: {r['error'][:200]}", "", "", ""])
            continue
        for g in r.get("goals", []):
            unit = g["unit"]
            value = _x(g["value"]) if unit.startswith("×") else f"{_n(g['value'], 2 if (g['value'] or 0) < 10 else 0)} {unit}"
            rows.append([r["title"], g["goal"], value, "**yes**" if g["met"] else "**no**"])
    lines += _table(["benchmark", "goal", "measured", "met"], rows)
    for i, (name, r) in enumerate(results["benchmarks"].items(), start=1):
        lines += [f"## {i}. {r.get('title', name)}", ""]
        if "error" in r:
            lines += [f"Did not run: {r['error']}", ""]
            continue
        q = r.get("machine_before")
        if q:
            lines += [f"Machine before it: {_n(q['busy_pct'])} % of both cores busy with other work"
                      + (f" after waiting {q['waited_s']:g} s for quiet" if q["waited_s"] else "") + ".", ""]
        lines += SECTIONS[name](r)
    lines += _changes(results, prev)
    lines += ["## Running it", "",
              "```sh",
              "make bench                          # the full suite, about 5 minutes (bounded to 10), writes this file",
              ".venv/bin/python -m bench.run --quick              # small sizes, a minute; raw JSON only",
              ".venv/bin/python -m bench.run --only heartbeat     # one benchmark (a2a_intake, dispatch, heartbeat, "
              "store, tui, idle)",
              "```", "",
              "`--quick` and `--only` write `bench/raw/<time>-quick.json` / `-partial.json` and leave this file alone "
              "(add `--write-results` to rewrite it anyway). A smoke version of every benchmark runs in `make test` "
              "(tests/bench/test_bench_smoke.py). The profiles' collapsed stacks (py-spy `--format raw`, for a flame "
              "graph) are kept in `bench/raw/profiles/` (not committed); their summaries are in the raw JSON.", ""]
    return "\n".join(lines)
