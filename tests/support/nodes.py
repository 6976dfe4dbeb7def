"""Real ``cortex-node`` processes for tests: free loopback ports, their own data directories,
started and stopped with signals. Waits are on conditions (runtime file, HTTP answers), never
fixed sleeps.

This is the one real-process node harness of the suite (the reliability suite uses it as is;
in-process nodes are in ``inproc.py``): start, stop (SIGTERM = seal), kill -9, pause/resume
(SIGSTOP/SIGCONT), another entry module or extra environment, REST and JSON-RPC calls, and
read-only looks into the node's own database.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tests.support.wait import wait_for

try:  # a node without --token may require its own operator token (kept in its data directory)
    from cortex_node.config import operator_token_path
except ImportError:  # a cortex_node from before operator tokens
    operator_token_path = None

__all__ = ["REPO", "A2A_HEADERS", "NodeFactory", "NodeProcess", "all_connected", "connected", "http", "run_cli",
           "wait_connected", "wait_for"]

REPO = Path(__file__).resolve().parents[2]
A2A_HEADERS = {"A2A-Version": "1.0"}
LIVE = ("online", "connected")
OPERATOR_TOKEN = "operator_token"  # what a node without a token makes in its data directory (0600)
SHARED_TOKEN = "test-swarm-token"  # one per home: every token-less node of one test shares it


def shared_operator_token(home: Path) -> str:
    """The operator token the token-less nodes of one home (one test) share: peers must agree
    on it, or their heartbeats are refused."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / SHARED_TOKEN
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


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
    """One cortex-node daemon. ``start`` blocks until it answers /healthz; ``start`` again after a
    stop or kill restarts it on the same port and data directory. ``module`` runs another entry
    point with the same flags (``tests.reliability.blocking_node``), ``extra_env`` adds to its
    environment."""

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
    extra_env: dict[str, str] = field(default_factory=dict)
    module: str = "cortex_node.cli.node"
    operator_token: bool = False  # token is the node's own operator token (not passed as --token)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", self.module, "--name", self.name, "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.args]
        if self.token and not self.operator_token:
            cmd += ["--token", self.token]
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CORTEX_HOME"] = str(self.home)
        env.pop("CORTEX_SWARM_TOKEN", None)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 15.0) -> "NodeProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.token is None or self.operator_token:
            # A node without a token requires its own operator token (<data dir>/operator_token).
            # Written here before the first start (the node keeps what it finds), the same for
            # every node of one home, so peers agree and the harness knows it.
            path = self.data_dir / OPERATOR_TOKEN
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(shared_operator_token(self.home) + "\n")
            self.token, self.operator_token = path.read_text().strip(), True
        (self.data_dir / "runtime.json").unlink(missing_ok=True)  # a killed node leaves it behind
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

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    # --- REST and JSON-RPC ----------------------------------------------------------------------
    @property
    def auth_token(self) -> str | None:
        """What requests carry unless a test names a token (``token=None``: none at all): the
        node's --token, else its operator token once it has made one."""
        if self.token or operator_token_path is None:
            return self.token
        try:
            return operator_token_path(self.data_dir).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def get(self, path: str, token: str | None = ...) -> tuple[int, Any]:
        return http("GET", self.url + path, token=self.auth_token if token is ... else token)

    def post(self, path: str, body: Any = None, token: str | None = ...) -> tuple[int, Any]:
        return http("POST", self.url + path, body if body is not None else {},
                    token=self.auth_token if token is ... else token)

    def get_ok(self, path: str, timeout: float = 10.0) -> Any:
        """GET that waits out a 429 (tests that flood a node read through the same limit)."""
        deadline = time.monotonic() + timeout
        while True:
            status, doc = self.get(path)
            if status != 429 or time.monotonic() > deadline:
                assert status == 200, (path, status, doc)
                return doc
            time.sleep(0.2)

    def rpc(self, method: str, params: Any = None, *, rpc_id: Any = 1, token: str | None = ...,
            timeout: float = 10.0) -> tuple[int, Any]:
        body = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            body["params"] = params
        return http("POST", self.url + "/a2a", body, token=self.auth_token if token is ... else token,
                    headers=A2A_HEADERS, timeout=timeout)

    def rpc_raw(self, raw: bytes, *, token: str | None = ..., timeout: float = 10.0) -> tuple[int, Any]:
        return http("POST", self.url + "/a2a", raw=raw, token=self.auth_token if token is ... else token,
                    headers=A2A_HEADERS, timeout=timeout)

    # --- the fleet as this node sees it ---------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        """node id -> status word, as GET /api/swarm/nodes shows it."""
        return {n["id"]: n["status"] for n in self.get("/api/swarm/nodes")[1]["nodes"]}

    def status_of(self, node_id: str) -> str | None:
        status, doc = self.get("/api/swarm/nodes")
        if status != 200:
            return None
        return {n["id"]: n["status"] for n in doc["nodes"]}.get(node_id)

    def events_about(self, node_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """A node's history as this node recorded it, newest first."""
        return self.get_ok(f"/api/swarm/nodes/{node_id}/events?limit={limit}")["events"]

    # --- the node's own database (read-only, a second connection like any tool) -----------------
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with closing(sqlite3.connect(f"file:{self.data_dir / 'swarm.db'}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute(sql, tuple(params)).fetchall()

    def directive_rows(self, directive_id: str, role: str | None = None) -> list[dict[str, Any]]:
        return directive_rows(self.data_dir, directive_id, role)

    # --- signals --------------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (after a SIGCONT, so that a paused node dies tidily too)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
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


class NodeFactory:
    """Starts nodes for one test (each in ``base/<name>``, sharing ``base/home``) and kills every
    one of them at the end: ``make(name, *flags, token=…, extra_env=…, module=…, start=…, data_dir=…)``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[NodeProcess] = []

    def __call__(self, name: str = "node", *args: str, token: str | None = None,
                 extra_env: dict[str, str] | None = None, module: str = "cortex_node.cli.node", start: bool = True,
                 data_dir: Path | None = None) -> NodeProcess:
        node = NodeProcess(data_dir=data_dir or self.base / name, home=self.base / "home", name=name, args=list(args),
                           token=token, extra_env=dict(extra_env or {}), module=module)
        self.started.append(node)
        return node.start() if start else node

    def kill_all(self) -> None:
        for node in self.started:
            node.kill()


def directive_rows(data_dir: Path, directive_id: str, role: str | None = None) -> list[dict[str, Any]]:
    """A directive's rows in a node's swarm_directives table (read-only)."""
    with closing(sqlite3.connect(f"file:{data_dir / 'swarm.db'}?mode=ro", uri=True, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        sql = "SELECT * FROM swarm_directives WHERE directive_id = ?"
        params: tuple = (directive_id,)
        if role:
            sql += " AND role = ?"
            params += (role,)
        return [dict(r) for r in db.execute(sql, params).fetchall()]


def connected(a: NodeProcess, b: NodeProcess) -> bool:
    """Each of the two sees the other connected."""
    return a.status_of(b.node_id) == "connected" and b.status_of(a.node_id) == "connected"


def all_connected(nodes: list[NodeProcess]) -> bool:
    """Every node knows exactly these nodes, and sees each of them live."""
    ids = {n.node_id for n in nodes}
    for n in nodes:
        seen = n.statuses()
        if set(seen) != ids or any(seen[i] not in LIVE for i in ids):
            return False
    return True


def wait_connected(*nodes: NodeProcess, timeout: float = 15.0) -> None:
    def ok() -> bool:
        return all(connected(x, y) for i, x in enumerate(nodes) for y in nodes[i + 1:])
    wait_for(ok, timeout, interval=0.05, what="the nodes to see each other connected")


def run_cli(*args: str, home: Path, input_text: str | None = None, timeout: float = 30.0,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["CORTEX_HOME"] = str(home)
    env.pop("CORTEX_SWARM_TOKEN", None)
    env.pop("CORTEX_SWARM_TOKEN_FILE", None)
    if (home / SHARED_TOKEN).exists():  # the token-less nodes of this home: the CLI uses their token
        env["CORTEX_SWARM_TOKEN_FILE"] = str(home / SHARED_TOKEN)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "cortex_node.cli.swarm", *args], capture_output=True, text=True,
                          input=input_text, timeout=timeout, env=env, cwd=REPO)
