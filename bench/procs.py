"""Child processes of the suite: nodes, reference servers, load generators, py-spy.

Everything started here is stopped in ``finally`` blocks (``Procs`` is a context manager that
SIGTERMs, then SIGKILLs, what it started); waits are bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVER_CPU = 0
CLIENT_CPU = 1


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin(cpu: int | None, enabled: bool = True) -> list[str]:
    """The taskset prefix that pins a command to ``cpu`` (nothing where that is not possible)."""
    if cpu is None or not enabled or not can_pin():
        return []
    return ["taskset", "-c", str(cpu)]


# Every node requires a token (one it makes itself when none is configured): the benchmark's
# nodes share this one, and every client of the suite sends it, as operators and peers do.
BENCH_TOKEN = "cortex-bench-token"
AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}"}


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=AUTH)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class ChildDied(RuntimeError):
    """A child exited while we waited for it: no point in waiting longer."""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ChildDied:
            raise
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}" + (f" ({last})" if last else ""))


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path else ""
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            except ProcessLookupError:
                pass


class Procs:
    """Starts children and stops every one of them on exit, whatever happened."""

    def __init__(self, workdir: Path, pinning: bool = True) -> None:
        self.workdir = workdir
        self.pinning = pinning
        self.children: list[Child] = []

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: Any) -> None:
        for child in reversed(self.children):
            child.stop()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["CORTEX_HOME"] = str(self.workdir / "home")
        env.pop("CORTEX_SWARM_TOKEN", None)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(extra or {})
        return env

    def spawn(self, name: str, cmd: list[str], cpu: int | None, env: dict[str, str] | None = None) -> Child:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(pin(cpu, self.pinning) + cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    env=env or self.env(), cwd=REPO)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def start_node(self, name: str, *args: str, cpu: int | None = SERVER_CPU, env: dict[str, str] | None = None,
                   timeout: float = 20.0) -> Child:
        """A real ``cortex-node`` process; returns once it answers /healthz. Its rate limit is set so
        high that it never refuses the load generator (the limiter's cost is still measured)."""
        data_dir = self.workdir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "runtime.json").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "cortex_node.cli.node", "--name", name, "--port", "0", "--data-dir", str(data_dir),
               *args]
        child = self.spawn(name, cmd, cpu, self.env({"CORTEX_SWARM_RATE_LIMIT": "1000000000",
                                                     "CORTEX_SWARM_TOKEN": BENCH_TOKEN, **(env or {})}))

        def ready() -> bool:
            if child.proc.poll() is not None:
                raise ChildDied(f"cortex-node {name} exited with {child.proc.returncode}: {child.log_tail()}")
            info = json.loads((data_dir / "runtime.json").read_text())
            if info.get("pid") != child.pid:
                return False
            status, _ = http_json("GET", info["url"] + "/healthz", timeout=2)
            if status == 200:
                child.info = info
                return True
            return False

        wait_for(ready, timeout, f"node {name} to answer", interval=0.05)
        return child

    def start_refserver(self, kind: str, cpu: int | None = SERVER_CPU, timeout: float = 20.0) -> Child:
        port_file = self.workdir / f"ref-{kind}.json"
        port_file.unlink(missing_ok=True)
        child = self.spawn(f"ref-{kind}", [sys.executable, "-m", "bench.refservers", kind, "--port-file",
                                           str(port_file)], cpu)

        def ready() -> dict | None:
            if child.proc.poll() is not None:
                raise ChildDied(f"reference server {kind} exited with {child.proc.returncode}: {child.log_tail()}")
            return json.loads(port_file.read_text()) if port_file.exists() else None

        child.info = wait_for(ready, timeout, f"reference server {kind}")
        child.info["url"] = f"http://127.0.0.1:{child.info['port']}"
        return child


def run_module(module: str, spec: dict[str, Any], cpu: int | None, pinning: bool, timeout: float,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module`` with the spec as JSON on stdin; its last stdout line is the result."""
    cmd = pin(cpu, pinning) + [sys.executable, "-m", module]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    try:
        out = subprocess.run(cmd, input=json.dumps(spec), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                             env=full_env)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise RuntimeError(f"{module} did not finish within {timeout:g} s: {err.strip()[-2000:]}") from exc
    if out.returncode != 0:
        raise RuntimeError(f"{module} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{module} printed no result: {out.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def loadgen(spec: dict[str, Any], *, pinning: bool = True, cpu: int | None = CLIENT_CPU) -> dict[str, Any]:
    timeout = float(spec.get("warmup_s", 1)) + float(spec.get("duration_s", 5)) + 2 * float(spec.get("timeout_s", 30)) + 30
    return run_module("bench.loadgen", spec, cpu, pinning, timeout)


# --- profiling ------------------------------------------------------------------------------------
def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Sampler:
    """py-spy attached to a running process for ``seconds``, collapsed stacks to ``out``. With
    ``--native`` (C frames too: the GC, SQLite, uvloop, system calls), which pauses the process
    for each sample (at 50 Hz that costs a node about a tenth of its throughput, at 200 Hz half):
    the figures of a profiled run are reported apart and never as results."""

    def __init__(self, pid: int, out: Path, seconds: float, rate: int = 50, pinning: bool = True) -> None:
        self.out = out
        exe = py_spy()
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        cmd = pin(CLIENT_CPU, pinning) + [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                                          "--rate", str(rate), "--format", "raw", "--threads", "--native",
                                          "--output", str(out)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def wait(self, timeout: float = 30.0) -> str | None:
        """Wait for py-spy; returns the error text, if any."""
        if self.proc is None:
            return self.error
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return "py-spy did not finish"
        if self.proc.returncode != 0 or not self.out.exists():
            return f"py-spy failed ({self.proc.returncode}): {err.decode(errors='replace').strip()[-500:]}"
        return None
