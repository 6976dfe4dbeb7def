"""Real ``cortex-node`` processes for tests: free loopback ports, their own data directories,
started and stopped with signals. Waits are on conditions (runtime file, HTTP answers), never
fixed sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing waited for may not exist yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 5.0,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read(), exc.code
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


@dataclass
class NodeProcess:
    """One cortex-node daemon. ``start`` blocks until it answers /healthz."""

    data_dir: Path
    home: Path
    name: str = "node"
    args: list[str] = field(default_factory=list)
    token: str | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    url: str = ""
    node_id: str = ""
    log_path: Path | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cortex_node.cli.node", "--name", self.name, "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.args]
        if self.token:
            cmd += ["--token", self.token]
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CORTEX_HOME"] = str(self.home)
        env.pop("CORTEX_SWARM_TOKEN", None)
        return env

    def start(self, timeout: float = 15.0) -> "NodeProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "runtime.json").unlink(missing_ok=True)
        self.log_path = self.data_dir / "test-node.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=self.env(), cwd=REPO)
        log.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cortex-node exited with {self.proc.returncode}: {self.log_tail()}")
            info = json.loads((self.data_dir / "runtime.json").read_text())
            if info["pid"] != self.proc.pid:
                return False
            self.url, self.node_id = info["url"], info["nodeId"]
            status, _ = http("GET", self.url + "/healthz")
            return status == 200

        try:
            wait_for(ready, timeout, what=f"node {self.name} to answer")
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
        # a restart on the same port keeps the port: later restarts reuse it
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no log)"

    def get(self, path: str, token: str | None = ...) -> tuple[int, Any]:
        return http("GET", self.url + path, token=self.token if token is ... else token)

    def post(self, path: str, body: Any = None, token: str | None = ...) -> tuple[int, Any]:
        return http("POST", self.url + path, body if body is not None else {}, token=self.token if token is ... else token)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        """SIGTERM (= seal); SIGKILL if it does not leave in time."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def run_cli(*args: str, home: Path, input_text: str | None = None, timeout: float = 30.0,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["CORTEX_HOME"] = str(home)
    env.pop("CORTEX_SWARM_TOKEN", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "cortex_node.cli.swarm", *args], capture_output=True, text=True,
                          input=input_text, timeout=timeout, env=env, cwd=REPO)
