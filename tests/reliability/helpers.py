"""Helpers for the reliability and security suite, on top of ``tests/support`` (the one node
harness: ``NodeProcess`` already pauses, resumes, runs another entry module, speaks JSON-RPC and
reads the node's database; ``connected``/``wait_connected`` live there too).

Everything runs real ``cortex-node`` processes on 127.0.0.1 with short intervals; waits are on
conditions. Nothing here edits the node: faults are made from outside (signals, a full or
read-only filesystem, a flood of requests) or, for the blocked event loop, by the small wrapper
in ``blocking_node.py``. What is left here is the suite's own vocabulary: A2A directive
messages, stray-process cleanup, small text helpers.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.nodes import A2A_HEADERS, NodeProcess, connected, wait_connected

__all__ = ["A2A_HEADERS", "TERMINAL", "Node", "assert_no_traceback", "connected", "directive_message", "jdump",
           "kill_strays", "lines", "new_directive_id", "now_iso", "wait_connected"]

TERMINAL = ("completed", "failed", "cancelled", "timed_out")

# The suite's name for a real node process (everything it needs is in tests/support/nodes.py).
Node = NodeProcess


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
