"""A real cortex-node process for the dashboard's pilot tests, and condition waits that keep the
app's event loop running (a blocking wait would freeze the app under test).

Self-contained on purpose: it depends on nothing outside tests/tui.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class NodeUnderTest:
    """One cortex-node daemon on loopback with its own CORTEX_HOME and data directory."""

    home: Path
    data_dir: Path
    args: list[str] = field(default_factory=lambda: ["--heartbeat-interval", "0.5", "--stale-after", "3"])
    port: int = 0
    proc: subprocess.Popen | None = None
    url: str = ""
    node_id: str = ""
    token: str | None = None  # the node's own operator token (it has no configured one)

    async def start(self, timeout: float = 15.0) -> "NodeUnderTest":
        """Start (or restart on the same port and data directory) and wait for /healthz."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        runtime = self.data_dir / "runtime.json"
        runtime.unlink(missing_ok=True)  # a SIGKILLed node leaves its runtime file behind
        env = dict(os.environ, CORTEX_HOME=str(self.home))
        env.pop("CORTEX_SWARM_TOKEN", None)
        with open(self.data_dir / "node.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cortex_node.cli.node", "--name", "tui-test", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), *self.args],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=REPO)

        async def answering() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"cortex-node exited with {self.proc.returncode}; see {self.data_dir}/node.log")
            info = json.loads(runtime.read_text())
            if info["pid"] != self.proc.pid:
                return False
            self.url, self.node_id, self.port = info["url"], info["nodeId"], info["port"]
            self.token = (self.data_dir / "operator_token").read_text().strip()
            status, _ = await self.request("GET", "/healthz")
            return status == 200

        await wait_until(answering, timeout=timeout, what="cortex-node to answer /healthz")
        return self

    async def request(self, method: str, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.request(method, self.url + path, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status, await resp.json(content_type=None)

    async def status(self) -> str:
        _, doc = await self.request("GET", f"/api/swarm/nodes/{self.node_id}")
        return doc["status"]

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a word, like a crashed machine."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
async def tui_node(tmp_path: Path) -> AsyncIterator[NodeUnderTest]:
    node = await NodeUnderTest(home=tmp_path / "home", data_dir=tmp_path / "data").start()
    try:
        yield node
    finally:
        node.stop()
