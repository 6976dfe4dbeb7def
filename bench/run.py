"""Run the benchmark suite: ``python -m bench.run`` (``make bench``).

    python -m bench.run                       # everything at full size (about 5 min, bounded to 10)
    python -m bench.run --quick               # small sizes, about a minute
    python -m bench.run --only store,tui      # some of them (repeatable or comma-separated)

A full run writes ``bench/raw/<UTC time>.json`` and ``bench/RESULTS.md``; ``--quick`` and
``--only`` write ``bench/raw/<time>-quick.json`` / ``-partial.json`` and leave RESULTS.md alone
unless ``--write-results`` is given. The run stops itself at ``--budget`` seconds: a benchmark
that would not fit is skipped, and one still running at the limit is interrupted (its child
processes are stopped) and recorded as such.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.procs import can_pin
from bench.suite import BENCHMARKS

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

FULL: dict[str, dict[str, Any]] = {
    "a2a_intake": {"duration_s": 2.5, "warmup_s": 1.0, "rounds": 3, "concurrencies": (1, 32), "profile_s": 8.0},
    "dispatch": {"duration_s": 3.0, "warmup_s": 1.0, "rounds": 2, "concurrencies": (1, 32), "profile_s": 8.0},
    "heartbeat": {"step_s": 3.0, "warmup_s": 0.5, "peers": 1000, "baseline_s": 2.0, "profile_s": 8.0},
    "store": {"nodes": 1000, "snapshots": 1440, "reps": 20, "baseline_reps": 2},
    "tui": {"nodes": 1000, "processes": 10_000, "refreshes": 20},
    "idle": {"peers": 100, "interval_s": 30.0, "measure_s": 60.0},
}
QUICK: dict[str, dict[str, Any]] = {
    "a2a_intake": {"duration_s": 1.5, "warmup_s": 0.5, "rounds": 1, "concurrencies": (1, 32), "profile_s": 3.0},
    "dispatch": {"duration_s": 1.5, "warmup_s": 0.5, "rounds": 1, "concurrencies": (1, 32), "profile_s": 3.0},
    "heartbeat": {"step_s": 1.5, "warmup_s": 0.3, "peers": 200, "baseline_s": 1.0, "profile_s": 3.0,
                  "rates": (100, 250, 500, 1000, 2000, 4000)},
    "store": {"nodes": 100, "snapshots": 1440, "reps": 3, "baseline_reps": 1},
    "tui": {"nodes": 1000, "processes": 10_000, "refreshes": 3},
    "idle": {"peers": 100, "interval_s": 30.0, "measure_s": 10.0},
}
# rough wall-clock seconds each needs, to skip what cannot finish inside the budget
ESTIMATE_S = {"a2a_intake": 110, "dispatch": 45, "heartbeat": 120, "store": 100, "tui": 40, "idle": 80}
QUICK_ESTIMATE_S = {"a2a_intake": 30, "dispatch": 15, "heartbeat": 40, "store": 15, "tui": 20, "idle": 25}


class BudgetExceeded(Exception):
    pass


LOCK_PATH = Path(tempfile.gettempdir()) / "cortex-bench.lock"


def take_machine_lock(wait_s: float) -> tuple[Any, str | None]:
    """One benchmark run per machine at a time: two would pin their servers to the same core and
    measure each other. Waits up to ``wait_s`` for another run to finish; returns (handle, a note
    when it had to go ahead anyway)."""
    handle = open(LOCK_PATH, "a+")
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            return handle, None
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                other = handle.read().strip() or "?"
                return handle, (f"another benchmark run (pid {other}) was still running after {wait_s:.0f} s of "
                                "waiting: this run went ahead and its figures may be disturbed")
            if not told:
                print(f"waiting for another benchmark run to finish (lock {LOCK_PATH}) …", flush=True)
                told = True
            time.sleep(1.0)


def _on_alarm(signum: int, frame: Any) -> None:
    raise BudgetExceeded("the run's time budget ran out")


def wait_for_quiet(max_s: float, busy_limit: float = 25.0) -> dict[str, float]:
    """Wait (at most ``max_s``) until the machine's CPUs are mostly idle: another session's test
    run next to a benchmark is the largest source of noise on a shared machine."""
    import psutil

    start = time.monotonic()
    busy = psutil.cpu_percent(interval=1.0)
    while busy > busy_limit and time.monotonic() - start < max_s:
        busy = psutil.cpu_percent(interval=1.0)
    return {"busy_pct": busy, "waited_s": round(max(0.0, time.monotonic() - start - 1.0), 1)}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    pkgs = {}
    for name in ("aiohttp", "aiosqlite", "uvloop", "psutil", "textual", "a2a-sdk", "starlette", "uvicorn", "py-spy"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = "not installed"
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        memory_gb = None
    return {
        "nproc": os.cpu_count(), "cpu_model": cpu_model, "memory_gb": memory_gb,
        "platform": platform.platform(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "packages": pkgs, "pinning": can_pin(), "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _keep_profiles(result: dict[str, Any], dest: Path, stamp: str, name: str) -> None:
    """Copy the collapsed stacks out of the work directory (bench/raw/profiles/, git-ignored)."""
    for key in ("profile", "profile_a", "profile_b"):
        prof = result.get(key)
        if isinstance(prof, dict) and prof.get("raw") and Path(prof["raw"]).exists():
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / f"{stamp}-{name}-{key}.txt"
            shutil.copyfile(prof["raw"], target)
            prof["raw"] = str(target.relative_to(REPO)) if target.is_relative_to(REPO) else str(target)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)}); repeatable or comma-separated")
    parser.add_argument("--quick", action="store_true", help="small sizes and short windows (about a minute)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and clients to cores")
    parser.add_argument("--budget", type=float, default=570.0, metavar="SECONDS",
                        help="stop the run after this long (default 570, inside make bench's 10 minutes)")
    parser.add_argument("--write-results", action="store_true",
                        help="rewrite bench/RESULTS.md even for a --quick or --only run")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where RESULTS.md and raw/ go (default bench/)")
    parser.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                        help="wait this long for another benchmark run on this machine to finish (default 120)")
    parser.add_argument("--render", type=Path, metavar="RAW_JSON",
                        help="run nothing: rewrite RESULTS.md from a recorded run (bench/raw/<time>.json)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temporary work directory (logs, profiles)")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.names = names or list(BENCHMARKS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        prev = report.previous_run(args.render.parent, args.render)
        (args.out / "RESULTS.md").write_text(report.render(results, args.render.name, prev))
        print(f"results: {args.out / 'RESULTS.md'} (from {args.render})")
        return 0
    started = time.monotonic()  # the budget counts from here, waiting for the lock included
    lock, lock_note = take_machine_lock(min(args.wait, max(0.0, args.budget - 60)))
    mode = "quick" if args.quick else ("partial" if args.names != list(BENCHMARKS) else "full")
    sizes = QUICK if args.quick else FULL
    estimates = QUICK_ESTIMATE_S if args.quick else ESTIMATE_S
    pinning = not args.no_pin
    stamp = datetime.now(timezone.utc)
    stamp_text = stamp.strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    meta = {"date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "mode": mode, **machine_info(),
            "load_start": [round(x, 2) for x in os.getloadavg()], "workdir": str(workdir)}
    meta["pinning"] = meta["pinning"] and pinning
    if lock_note:
        meta["concurrent_run"] = lock_note
        print(lock_note, flush=True)
    results: dict[str, Any] = {"meta": meta, "benchmarks": {}}
    print(f"cortex bench ({mode}): {', '.join(args.names)}; work directory {workdir}", flush=True)
    quiet_budget = 0.0 if args.quick else 120.0  # waiting for quiet, over the whole run
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(1, int(args.budget - (time.monotonic() - started)) + 1))
    try:
        for name in args.names:
            left = args.budget - (time.monotonic() - started)
            if left < estimates[name]:
                results["benchmarks"][name] = {"name": name, "error": f"skipped: {left:.0f} s of the time budget left, "
                                                                      f"it needs about {estimates[name]} s"}
                print(f"  {name}: skipped (budget)", flush=True)
                continue
            quiet = wait_for_quiet(min(30.0, quiet_budget, max(0.0, left - estimates[name])))
            quiet_budget -= quiet["waited_s"]
            kwargs = dict(sizes[name])
            if name in ("a2a_intake", "dispatch", "heartbeat") and args.no_profile:
                kwargs["profile"] = False
            t = time.monotonic()
            print(f"  {name} …", end="", flush=True)
            try:
                results["benchmarks"][name] = BENCHMARKS[name](workdir, pinning=pinning, **kwargs)
                results["benchmarks"][name]["machine_before"] = quiet
                _keep_profiles(results["benchmarks"][name], args.out / "raw" / "profiles", stamp_text, name)
                results["benchmarks"][name]["seconds"] = round(time.monotonic() - t, 1)
                goals = results["benchmarks"][name].get("goals", [])
                met = sum(1 for g in goals if g["met"])
                print(f" {time.monotonic() - t:.0f} s, goals met {met}/{len(goals)}", flush=True)
            except BudgetExceeded:
                results["benchmarks"][name] = {"name": name, "error": "interrupted: the time budget ran out"}
                print(" interrupted (budget)", flush=True)
                break
            except Exception as exc:
                results["benchmarks"][name] = {"name": name, "error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc()}
                print(f" failed: {type(exc).__name__}: {exc}", flush=True)
    finally:
        signal.alarm(0)
    meta["duration_s"] = time.monotonic() - started
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]

    raw_dir = args.out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if mode == "full" else f"-{mode}"
    raw_path = raw_dir / f"{stamp_text}{suffix}.json"
    raw_path.write_text(json.dumps(results, indent=1, default=str, allow_nan=True) + "\n")
    print(f"raw figures: {raw_path}")
    if mode == "full" or args.write_results:
        prev = report.previous_run(raw_dir, raw_path)
        (args.out / "RESULTS.md").write_text(report.render(results, raw_path.name, prev))
        print(f"results: {args.out / 'RESULTS.md'}")
    for name, r in results["benchmarks"].items():
        for g in r.get("goals", []):
            print(f"  {'MET ' if g['met'] else 'NOT '} {name}: {g['goal']} (measured {g['value']})")
    if args.keep_workdir:
        print(f"work directory kept: {workdir}")
    else:
        # profiles are summarised in the JSON; the collapsed stacks go with the work directory
        shutil.rmtree(workdir, ignore_errors=True)
    lock.close()  # releases the machine lock
    failed = [n for n, r in results["benchmarks"].items() if "error" in r and not r["error"].startswith("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
