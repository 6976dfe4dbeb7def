"""A real cortex-node process on a free loopback port: REST, heartbeats, drain, seal, restart,
and the clear refusals at start."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nodes import REPO, http, run_cli, wait_for


def test_rest_answers_with_the_node_and_its_figures(shared_node) -> None:
    status, health = shared_node.get("/healthz")
    assert status == 200 and health["ok"] and health["nodeId"] == shared_node.node_id
    status, doc = shared_node.get("/api/swarm/nodes")
    assert status == 200 and doc["selfId"] == shared_node.node_id
    (me,) = [n for n in doc["nodes"] if n["isSelf"]]
    assert me["status"] in ("online", "draining") and me["name"] == "shared"
    assert me["metrics"]["memoryTotalMb"] > 0 and me["endpoint"] == shared_node.url
    status, one = shared_node.get(f"/api/swarm/nodes/{shared_node.node_id}")
    assert status == 200 and one["id"] == shared_node.node_id
    status, metrics = shared_node.get("/api/swarm/nodes/metrics")
    assert status == 200 and metrics["nodes"][0]["nodeId"] == shared_node.node_id
    status, topo = shared_node.get("/api/swarm/topology")
    assert status == 200 and topo["processes"][0]["pid"] == 1 and topo["processes"][0]["role"] == "node"
    status, report = shared_node.get("/api/swarm/report")
    assert status == 200 and report["totalNodes"] == 1
    assert report["totalCpuMs"] == sum(n["cpuMs"] for n in report["perNode"])
    status, directives = shared_node.get("/api/swarm/directives")
    assert status == 200 and directives == {"directives": []}
    status, events = shared_node.get(f"/api/swarm/nodes/{shared_node.node_id}/events")
    assert status == 200 and events["events"][-1]["kind"] == "registered"
    status, spec = shared_node.get("/openapi.json")
    assert status == 200 and "/api/swarm/nodes/{node_id}/snapshots" in spec["paths"]


def test_snapshots_fill_at_the_heartbeat_interval(shared_node) -> None:
    path = f"/api/swarm/nodes/{shared_node.node_id}/snapshots"
    series = wait_for(lambda: (s := shared_node.get(path + "?limit=3")[1]["snapshots"]) and len(s) == 3 and s,
                      what="three snapshots")
    stamps = [s["snapshotAt"] for s in series]
    assert stamps == sorted(stamps)  # oldest first
    status, since = shared_node.get(path + f"?since={stamps[1]}")
    assert status == 200 and since["snapshots"][0]["snapshotAt"] >= stamps[1]


@pytest.mark.parametrize("query, param", [
    ("/api/swarm/directives?limit=0", "limit"),
    ("/api/swarm/directives?limit=abc", "limit"),
    ("/api/swarm/directives?status=done", "status"),
    ("/api/swarm/nodes/{id}/snapshots?limit=5000", "limit"),
    ("/api/swarm/nodes/{id}/snapshots?since=yesterday", "since"),
    ("/api/swarm/nodes/{id}/events?limit=-1", "limit"),
])
def test_bad_query_parameters_are_a_400_naming_the_parameter(shared_node, query: str, param: str) -> None:
    status, body = shared_node.get(query.replace("{id}", shared_node.node_id))
    assert status == 400
    assert body["error"]["code"] == "bad_request" and f"'{param}'" in body["error"]["message"]


def test_unknown_things_are_json_404s(shared_node) -> None:
    status, body = shared_node.get("/api/swarm/nodes/node_nope")
    assert status == 404 and "node_nope" in body["error"]["message"]
    status, body = shared_node.get("/api/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = http("DELETE", shared_node.url + "/api/swarm/nodes", token=shared_node.token)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


def test_bad_control_bodies_change_nothing(shared_node) -> None:
    for raw in (b"{nope", b"[1]", json.dumps({"reason": 5}).encode()):
        status, body = http("POST", shared_node.url + "/api/swarm/drain", raw=raw, token=shared_node.token)
        assert status == 400, body
    assert shared_node.get("/healthz")[1]["status"] == "online"


def test_two_heartbeats_at_one_second_give_two_snapshots(node_factory) -> None:
    node = node_factory("beat", "--heartbeat-interval", "1", "--stale-after", "5")
    path = f"/api/swarm/nodes/{node.node_id}/snapshots"
    series = wait_for(lambda: (s := node.get(path)[1]["snapshots"]) and len(s) >= 2 and s, timeout=5,
                      what="two snapshots")
    from cortex_node.contracts import parse_ts
    gap = parse_ts(series[1]["snapshotAt"]) - parse_ts(series[0]["snapshotAt"])
    assert 850 <= gap <= 1200  # 1 s with the ±10 % jitter
    assert series[1]["uptimeSeconds"] > series[0]["uptimeSeconds"]
    assert series[1]["memoryTotalMb"] > 0 and series[1]["cpuMs"] > 0


def test_drain_shows_draining_everywhere_and_survives_a_restart(node_factory, tmp_path: Path) -> None:
    node = node_factory("drainer", "--heartbeat-interval", "0.2", "--stale-after", "2")
    status, body = node.post("/api/swarm/drain", {"reason": "kernel upgrade"})
    assert status == 200 and body["status"] == "draining"
    assert node.get("/healthz")[1]["status"] == "draining"
    assert node.get("/api/swarm/nodes")[1]["nodes"][0]["status"] == "draining"
    out = run_cli("swarm", "nodes", "--url", node.url, home=node.home)
    assert out.returncode == 0 and "draining" in out.stdout
    events = node.get(f"/api/swarm/nodes/{node.node_id}/events")[1]["events"]
    assert events[0]["kind"] == "draining" and events[0]["detail"] == "kernel upgrade"
    # an operator's drain outlives a restart; undrain puts it back
    node.stop()
    node.start()
    assert node.get("/healthz")[1]["status"] == "draining"
    assert node.post("/api/swarm/undrain")[1]["status"] == "online"


def test_cli_seal_stops_the_daemon_with_exit_0_and_restart_keeps_the_id(node_factory) -> None:
    node = node_factory("sealer", "--heartbeat-interval", "0.2", "--stale-after", "2")
    first_id = node.node_id
    out = run_cli("swarm", "seal", "--url", node.url, home=node.home)
    assert out.returncode == 0 and "sealed" in out.stdout, out.stderr
    assert node.wait_exit() == 0
    db = sqlite3.connect(node.data_dir / "swarm.db")
    assert db.execute("SELECT status, lifecycle FROM nodes").fetchall() == [("sealed", "sealed")]
    db.close()
    node.start()
    assert node.node_id == first_id
    status, doc = node.get("/api/swarm/nodes")
    assert [n["id"] for n in doc["nodes"]] == [first_id] and doc["nodes"][0]["status"] == "online"
    db = sqlite3.connect(node.data_dir / "swarm.db")
    assert db.execute("SELECT COUNT(*) FROM nodes").fetchone() == (1,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_sigterm_seals_and_exits_0(node_factory) -> None:
    node = node_factory("termed", "--heartbeat-interval", "0.2", "--stale-after", "2")
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0
    assert not (node.data_dir / "runtime.json").exists()
    events = sqlite3.connect(node.data_dir / "swarm.db").execute(
        "SELECT kind, detail FROM swarm_node_events ORDER BY id DESC LIMIT 1").fetchone()
    assert events == ("sealed", "signal SIGTERM")


def test_the_token_guards_the_api_but_not_health(node_factory) -> None:
    node = node_factory("guarded", token="s3cret-token")
    assert http("GET", node.url + "/healthz")[0] == 200
    status, body = http("GET", node.url + "/api/swarm/nodes")
    assert status == 401 and "s3cret" not in json.dumps(body)
    assert http("GET", node.url + "/api/swarm/nodes", token="wrong")[0] == 401
    assert http("POST", node.url + "/api/swarm/seal", {}, token="wrong")[0] == 401
    assert node.get("/healthz")[1]["status"] == "online"  # nothing happened
    assert node.get("/api/swarm/nodes")[0] == 200
    out = run_cli("swarm", "nodes", "--url", node.url, home=node.home)
    assert out.returncode == 1 and "401" in out.stderr and "--token" in out.stderr
    out = run_cli("swarm", "nodes", "--url", node.url, "--json", home=node.home,
                  env_extra={"CORTEX_SWARM_TOKEN": "s3cret-token"})
    assert out.returncode == 0 and json.loads(out.stdout)["nodes"][0]["name"] == "guarded"
    assert "s3cret-token" not in node.log_tail(200)


def _node_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cortex_node.cli.node", *args]


def _run_node(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"CORTEX_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(_node_cmd(*args), capture_output=True, text=True, timeout=20, env=env, cwd=REPO)


def test_refusals_at_start_are_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"swarm": {"port": "x"')
    out = _run_node(tmp_path, "--config", str(cfg))
    assert out.returncode == 2 and str(cfg) in out.stderr and "not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr

    out = _run_node(tmp_path, "--tier", "admin", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 2 and "--tier" in out.stderr and "root, sudo, unprivileged" in out.stderr

    out = _run_node(tmp_path, "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 1 and "without a swarm token" in out.stderr

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = _run_node(tmp_path, "--port", "0", "--data-dir", str(blocker / "sub"))
    assert out.returncode == 1 and "not writable" in out.stderr and "Traceback" not in out.stderr

    unopenable = tmp_path / "db-is-a-directory"
    (unopenable / "swarm.db").mkdir(parents=True)
    out = _run_node(tmp_path, "--port", "0", "--data-dir", str(unopenable))
    assert out.returncode == 1 and "cannot use the database" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_port_in_use_and_a_second_daemon_on_one_data_dir_are_refused(node_factory, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run_node(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "p"))
    assert out.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "Traceback" not in out.stderr
    node = node_factory("owner")
    out = _run_node(tmp_path, "--port", "0", "--data-dir", str(node.data_dir))
    assert out.returncode == 1 and "another cortex-node" in out.stderr
    assert node.get("/healthz")[0] == 200  # the first one is untouched
