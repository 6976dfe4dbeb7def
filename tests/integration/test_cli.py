"""`cortex swarm …` against real nodes: views, --json, init --detach, and the no-node message."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from tests.support.nodes import run_cli, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_views_and_json(shared_node) -> None:
    for cmd in ("nodes", "topology", "report", "directives"):
        out = run_cli("swarm", cmd, "--url", shared_node.url, home=shared_node.home)
        assert out.returncode == 0, out.stderr
        out_json = run_cli("swarm", cmd, "--url", shared_node.url, "--json", home=shared_node.home)
        assert out_json.returncode == 0 and isinstance(json.loads(out_json.stdout), dict)
    nodes = run_cli("swarm", "nodes", "--url", shared_node.url, home=shared_node.home).stdout
    assert "shared" in nodes and shared_node.node_id in nodes and "127.0.0.1:" in nodes
    topo = run_cli("swarm", "topology", "--url", shared_node.url, home=shared_node.home).stdout
    assert "cortex-node" in topo and "running" in topo


def test_no_node_running_is_one_line_with_how_to_start(tmp_path: Path) -> None:
    port = free_port()
    out = run_cli("swarm", "nodes", "--url", f"http://127.0.0.1:{port}", home=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no cortex-node is answering" in out.stderr
    assert "cortex swarm init" in out.stderr


def test_overview_and_help_have_examples(tmp_path: Path) -> None:
    out = run_cli("swarm", home=tmp_path)
    assert out.returncode == 0
    for sub in ("init", "nodes", "topology", "report", "drain", "undrain", "seal", "directives"):
        assert sub in out.stdout
        help_out = run_cli("swarm", sub, "--help", home=tmp_path)
        assert help_out.returncode == 0 and "Example: cortex swarm" in help_out.stdout


def test_init_detach_saves_config_and_runs_the_node(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    out = run_cli("swarm", "init", "--name", "edge-1", "--port", str(port), "--group", "edge", "--detach", "--json",
                  home=home)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    try:
        cfg = json.loads((home / "config.json").read_text())
        assert cfg["swarm"] == {"name": "edge-1", "port": port, "group": "edge"}
        assert Path(info["pidFile"]).read_text().strip() == str(info["pid"])
        # the saved config is the CLI's default target now
        nodes = run_cli("swarm", "nodes", "--json", home=home)
        doc = json.loads(nodes.stdout)
        assert doc["nodes"][0]["name"] == "edge-1" and doc["nodes"][0]["groupName"] == "edge"
    finally:
        os.kill(info["pid"], signal.SIGTERM)
    wait_for(lambda: not _alive(info["pid"]), what="the detached node to exit")
    assert "listening on" in Path(info["log"]).read_text()


def test_init_rejects_bad_values_without_touching_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"swarm": {"name": "keep"}}')
    out = run_cli("swarm", "init", "--name", "x", "--tier", "god", "--detach", home=home)
    assert out.returncode == 2 and "root, sudo, unprivileged" in out.stderr
    assert json.loads((home / "config.json").read_text()) == {"swarm": {"name": "keep"}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of our own child counts as gone
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def test_forget_drops_a_peer_and_refuses_unknown_ones(node_factory) -> None:
    node = node_factory("forgetful")
    params = {"node": {"id": "node_ghost", "name": "ghost", "endpoint": "http://127.0.0.1:9"}, "lifecycle": "active",
              "metrics": {}, "counters": {}, "processes": []}
    assert "result" in node.rpc("SwarmHeartbeat", params)[1]
    assert "node_ghost" in node.statuses()
    out = run_cli("swarm", "forget", "node_ghost", "--url", node.url, home=node.home)
    assert out.returncode == 0 and "forgot node_ghost" in out.stdout, out.stderr
    assert "node_ghost" not in node.statuses()
    out = run_cli("swarm", "forget", "node_ghost", "--url", node.url, "--json", home=node.home)
    assert out.returncode == 1 and "node_ghost" in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
