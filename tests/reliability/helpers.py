"""Helpers for the reliability and security suite (on top of tests/support/nodes.py).

Everything runs real ``cortex-node`` processes on 127.0.0.1 with short intervals; waits are on
conditions. Nothing here edits the node: faults are made from outside (signals, a full or
read-only filesystem, a flood of requests) or, for the blocked event loop, by the small wrapper
in ``blocking_node.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tests.support.nodes import NodeProcess, http, wait_for

TERMINAL = ("completed", "failed", "cancelled", "timed_out")
A2A_HEADERS = {"A2A-Version": "1.0"}


@dataclass
class Node(NodeProcess):
    """A NodeProcess that can take extra environment variables and run another entry module
    (``tests.reliability.blocking_node`` for the blocked-loop scenario)."""

    extra_env: dict[str, str] = field(default_factory=dict)
    module: str = "cortex_node.cli.node"

    def command(self) -> list[str]:
        cmd = super().command()
        return [sys.executable, "-m", self.module, *cmd[3:]]

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(self.extra_env)
        return env

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process still dies on SIGKILL; be tidy
            except ProcessLookupError:
                pass
        super().kill()

    # --- reading the node's own database (read-only, a second connection like any tool) --------
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with closing(sqlite3.connect(f"file:{self.data_dir / 'swarm.db'}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute(sql, tuple(params)).fetchall()

    def directive_rows(self, directive_id: str, role: str | None = None) -> list[dict[str, Any]]:
        with closing(sqlite3.connect(f"file:{self.data_dir / 'swarm.db'}?mode=ro", uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            sql = "SELECT * FROM swarm_directives WHERE directive_id = ?"
            params: tuple = (directive_id,)
            if role:
                sql += " AND role = ?"
                params += (role,)
            return [dict(r) for r in db.execute(sql, params).fetchall()]

    def status_of(self, node_id: str) -> str | None:
        status, doc = self.get("/api/swarm/nodes")
        if status != 200:
            return None
        return {n["id"]: n["status"] for n in doc["nodes"]}.get(node_id)

    def get_ok(self, path: str, timeout: float = 10.0) -> Any:
        """GET that waits out a 429 (tests that flood a node read through the same limit)."""
        deadline = time.monotonic() + timeout
        while True:
            status, doc = self.get(path)
            if status != 429 or time.monotonic() > deadline:
                assert status == 200, (path, status, doc)
                return doc
            time.sleep(0.2)

    def events_about(self, node_id: str, limit: int = 200) -> list[dict[str, Any]]:
        return self.get_ok(f"/api/swarm/nodes/{node_id}/events?limit={limit}")["events"]

    def rpc(self, method: str, params: Any = None, *, rpc_id: Any = 1, token: str | None = ...,
            timeout: float = 10.0) -> tuple[int, Any]:
        body = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            body["params"] = params
        return http("POST", self.url + "/a2a", body, token=self.token if token is ... else token,
                    headers=A2A_HEADERS, timeout=timeout)

    def rpc_raw(self, raw: bytes, *, token: str | None = ..., timeout: float = 10.0) -> tuple[int, Any]:
        return http("POST", self.url + "/a2a", raw=raw, token=self.token if token is ... else token,
                    headers=A2A_HEADERS, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""


def connected(a: Node, b: Node) -> bool:
    return a.status_of(b.node_id) == "connected" and b.status_of(a.node_id) == "connected"


def wait_connected(*nodes: Node, timeout: float = 15.0) -> None:
    def ok() -> bool:
        return all(connected(x, y) for i, x in enumerate(nodes) for y in nodes[i + 1:])
    wait_for(ok, timeout, interval=0.05, what="the nodes to see each other connected")


def new_directive_id() -> str:
    return f"dir_test_{uuid.uuid4().hex[:12]}"


def directive_message(kind: str, payload: dict[str, Any], *, directive_id: str | None = None,
                      source: str = "node_tester", ttl_ms: int = 30_000, priority: str = "normal",
                      created_at: str | None = None, expires_at: str | None = None) -> dict[str, Any]:
    """The A2A message a dispatching node sends (DESIGN §5): metadata + a data part."""
    directive_id = directive_id or new_directive_id()
    doc: dict[str, Any] = {"directiveId": directive_id, "sourceNodeId": source, "kind": kind, "payload": payload,
                           "priority": priority, "ttlMs": ttl_ms}
    if created_at:
        doc["createdAt"] = created_at
    if expires_at:
        doc["expiresAt"] = expires_at
    return {
        "messageId": f"msg.{directive_id}", "role": "ROLE_USER", "contextId": f"swarm.{directive_id}",
        "parts": [{"data": doc}],
        "metadata": {"swarmKind": kind, "swarmPriority": priority, "swarmSourceNodeId": source,
                     "swarmDirectiveId": directive_id, "swarmTtlMs": ttl_ms},
    }


def kill_strays(marker: str) -> int:
    """Kill processes whose command line holds ``marker`` (commands an execute_task started on a
    node that was then killed -9 are orphaned and would outlive the test)."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
                proc.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def now_iso(offset_ms: int = 0) -> str:
    from cortex_node.contracts import format_ts

    return format_ts(time.time_ns() // 1_000_000 + offset_ms)


def assert_no_traceback(text: str, what: str = "output") -> None:
    assert "Traceback (most recent call last)" not in text, f"a traceback in {what}:\n{text[-3000:]}"


def jdump(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True)
