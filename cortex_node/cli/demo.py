"""``cortex swarm demo``: a local swarm to look at. N node processes on free loopback ports (one
seed, data under .cortex-demo/, a shared random token in .cortex-demo/token that every node and the
TUI read as a token file), a light simulated workload so that the charts and the process tree
move, and cortex-tui on node 1. On exit every node is sealed."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cortex_node.cli.client import CliError, NodeClient
from cortex_node.contracts import ApiPath

DEMO_GROUPS = ("edge", "core")
WORKLOAD_PERIOD_S = 2.0


@dataclass
class DemoNode:
    name: str
    port: int
    data_dir: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def write_token_file(path: Path, token: str) -> Path:
    """The swarm token in a file only its owner reads (nodes get --token-file: no token in ps)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return path


def start_nodes(count: int, root: Path, token: str, interval_s: float,
                token_file: Path | None = None) -> list[DemoNode]:
    if token_file is None:
        token_file = write_token_file(root / "token", token)
    nodes: list[DemoNode] = []
    for i in range(count):
        name = f"node-{i + 1}"
        port = free_port()
        data_dir = root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "cortex_node.cli.node", "--name", name, "--port", str(port),
               "--data-dir", str(data_dir), "--group", DEMO_GROUPS[i % len(DEMO_GROUPS)],
               "--heartbeat-interval", str(interval_s), "--stale-after", str(max(6.0, interval_s * 4)),
               "--log-level", "warning", "--token-file", str(token_file)]
        if nodes:
            cmd += ["--seed", nodes[0].url]
        env = dict(os.environ, CORTEX_HOME=str(root / "home"))
        for var in ("CORTEX_SWARM_TOKEN", "CORTEX_SWARM_TOKEN_FILE"):  # --token-file is the one token
            env.pop(var, None)
        with open(data_dir / "node.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # Ctrl-C in the TUI must not kill the nodes
        nodes.append(DemoNode(name, port, data_dir, proc))
        log(f"started {name} on http://127.0.0.1:{port} (log: {data_dir / 'node.log'})")
    for node in nodes:
        wait_healthy(node, token)
    return nodes


def wait_healthy(node: DemoNode, token: str, timeout: float = 20.0) -> None:
    client = NodeClient(node.url, token, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            tail = (node.data_dir / "node.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise CliError(f"{node.name} exited at start: {tail[0] if tail else 'no output'}")
        try:
            client.get(ApiPath.HEALTH)
            return
        except CliError:
            time.sleep(0.1)
    raise CliError(f"{node.name} did not answer within {timeout:.0f} s; see {node.data_dir / 'node.log'}")


class Workload(threading.Thread):
    """Every couple of seconds, one small piece of work between two random nodes: a synthetic
    (sim) agent, a short command, or a resource query."""

    def __init__(self, nodes: list[DemoNode], token: str, seed: int | None = None) -> None:
        super().__init__(daemon=True, name="demo-workload")
        self.nodes = nodes
        self.token = token
        self.stop = threading.Event()
        self.random = random.Random(seed)
        self.sent = 0

    def run(self) -> None:
        ids: dict[str, str] = {}
        while not self.stop.wait(WORKLOAD_PERIOD_S * self.random.uniform(0.5, 1.5)):
            source, target = self.random.choice(self.nodes), self.random.choice(self.nodes)
            try:
                if target.url not in ids:
                    ids[target.url] = NodeClient(target.url, self.token, timeout=3).get(ApiPath.HEALTH)["nodeId"]
                NodeClient(source.url, self.token, timeout=5).post(ApiPath.DIRECTIVES, self.body(ids[target.url]))
                self.sent += 1
            except CliError:
                continue  # a node may be drained or sealed from the TUI: that is part of the demo

    def body(self, target_id: str) -> dict:
        roll = self.random.random()
        if roll < 0.5:
            seconds = f"{self.random.uniform(4, 15):.1f}"
            return {"targetNodeId": target_id, "kind": "spawn_agent", "wait": False,
                    "payload": {"agentType": "sim", "instruction": self.random.choice(
                        ["summarise the logs", "plan the release", "triage issue 42", "draft the changelog"]),
                        "env": {"CORTEX_SIM_SECONDS": seconds}, "detach": True}}
        if roll < 0.8:
            return {"targetNodeId": target_id, "kind": "execute_task", "wait": False,
                    "payload": {"command": [sys.executable, "-c", "import time; time.sleep(0.5); print('ok')"]}}
        return {"targetNodeId": target_id, "kind": "query_resources", "wait": False}


def seal_all(nodes: list[DemoNode], token: str) -> None:
    for node in nodes:
        if node.proc.poll() is None:
            try:
                NodeClient(node.url, token, timeout=3).post(ApiPath.control("seal"), {"reason": "demo finished"})
            except CliError:
                node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.proc.wait(15)
        except subprocess.TimeoutExpired:
            node.proc.kill()


def run_demo(count: int, tui: bool, root: Path, interval_s: float, duration: float | None) -> int:
    if root.exists():
        shutil.rmtree(root)  # a fresh fleet each time: old ids and ports would only confuse
    root.mkdir(parents=True)
    token = secrets.token_urlsafe(32)
    token_file = write_token_file(root / "token", token)
    nodes = start_nodes(count, root, token, interval_s, token_file)
    (root / "demo.json").write_text(json.dumps({"nodes": [n.url for n in nodes]}, indent=2))
    workload = Workload(nodes, token)
    workload.start()
    log(f"{count} nodes up, workload running; the swarm token is in {token_file}")
    try:
        if tui:
            env = dict(os.environ, CORTEX_SWARM_TOKEN_FILE=str(token_file))
            env.pop("CORTEX_SWARM_TOKEN", None)
            return subprocess.call([sys.executable, "-m", "cortex_tui.app", "--url", nodes[0].url], env=env)
        log(f"no TUI: try  cortex swarm nodes --url {nodes[0].url} --token-file {token_file}")
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
            if any(n.proc.poll() is not None for n in nodes):
                log("a node stopped; ending the demo")
                break
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        workload.stop.set()
        log("sealing every node…")
        seal_all(nodes, token)
        log(f"done ({workload.sent} directives sent)")
