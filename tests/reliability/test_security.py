"""Security: nobody gets in without the swarm token, the tier decides what runs, a directive runs at
most once and never after it expired, the token never leaks, and one client cannot flood a node.

Real cortex-node processes on 127.0.0.1; every test names what it proves in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.reliability.conftest import FAST
from tests.reliability.helpers import (
    A2A_HEADERS,
    Node,
    directive_message,
    lines,
    now_iso,
    wait_connected,
)
from tests.support.nodes import REPO, http, run_cli, wait_for

TOKEN = f"sec-{uuid.uuid4().hex}"  # unique: a grep for it can only find a leak

# Path parameters for routes taken from the router or the OpenAPI document.
_PATH_VALUES = {"namespace": "memory", "key": "k1", "directive_id": "dir_nope"}


def _fill(path: str, node_id: str) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1)
        return node_id if name == "node_id" else _PATH_VALUES.get(name, "x")
    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", value, path)


def served_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the node's application serves, from its router (in-process:
    the app is built the way run_node builds it, nothing is started)."""
    from cortex_node.app import build_app
    from cortex_node.clock import SystemClock
    from cortex_node.config import NodeSettings

    app = build_app(NodeSettings(name="router", data_dir=tmp_path, token="t"), SystemClock(), node_id="node_router")
    return {(r.method, r.resource.canonical) for r in app.router.routes()
            if r.method not in ("HEAD", "OPTIONS") and r.resource is not None}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("guarded")
    node = Node(data_dir=base / "data", home=base / "home", name="guarded", args=FAST, token=TOKEN).start()
    yield node
    node.kill()


# --- authentication ---------------------------------------------------------------------------------
WRONG_AUTH = [
    None,                                  # no header at all
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},  # the right token plus one character
    {"Authorization": f"Bearer {TOKEN[:-1]}"},  # one character short
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
]


def test_every_api_route_and_a2a_answer_401_without_the_right_token_and_nothing_runs(
        guarded: Node, tmp_path: Path) -> None:
    status, spec = http("GET", guarded.url + "/openapi.json")
    assert status == 200
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    routes = {(m, p) for m, p in documented | served_routes(tmp_path)
              if p.startswith("/api/") or p in ("/a2a", "/metrics")}
    assert ("POST", "/a2a") in routes and ("POST", "/api/swarm/seal") in routes
    marker = tmp_path / "ran"
    a2a_body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": directive_message("execute_task", {"command": ["touch", str(marker)]})}}
    for method, path in sorted(routes):
        url = guarded.url + _fill(path, guarded.node_id)
        body = a2a_body if path == "/a2a" else ({"reason": "x", "value": 1, "targetNodeId": guarded.node_id,
                                                 "kind": "query_resources"} if method in ("POST", "PUT") else None)
        for headers in WRONG_AUTH:
            status, doc = http(method, url, body, headers=dict(headers or {}, **A2A_HEADERS))
            assert status == 401, (method, path, headers, status, doc)
            assert doc["error"]["code"] == "unauthorized", doc
            assert TOKEN not in json.dumps(doc)
    # nothing happened: no work ran, no directive, no drain or seal, no state written
    assert not marker.exists()
    health = guarded.get("/healthz")[1]
    assert health["status"] == "online" and guarded.proc.poll() is None
    assert guarded.get("/api/swarm/directives")[1] == {"directives": []}
    assert guarded.get("/api/swarm/state/memory/k1")[0] == 404
    assert guarded.query("SELECT COUNT(*) FROM swarm_directives") == [(0,)]
    # the right token opens every read
    assert guarded.get("/api/swarm/nodes")[0] == 200


def test_the_agent_card_health_and_api_description_stay_public(guarded: Node) -> None:
    status, card = http("GET", guarded.url + "/.well-known/agent-card.json")
    assert status == 200 and card["supportedInterfaces"][0]["url"] == guarded.url + "/a2a"
    assert card["securitySchemes"] == {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}}
    assert TOKEN not in json.dumps(card)
    status, health = http("GET", guarded.url + "/healthz")
    assert status == 200 and health["ok"] is True
    assert http("GET", guarded.url + "/openapi.json")[0] == 200


def test_openapi_describes_every_route_the_node_serves(tmp_path: Path) -> None:
    """The 401 sweep above enumerates routes from /openapi.json; it is complete only if the
    document is (README: 'The full description is GET /openapi.json')."""
    from cortex_node.api.openapi import openapi_document

    documented = {(m.upper(), p) for p, ops in openapi_document()["paths"].items() for m in ops}
    served = {(m, p) for m, p in served_routes(tmp_path)
              if p.startswith("/api/") or p in ("/healthz", "/metrics")}
    missing = sorted(served - documented)
    assert not missing, f"served but not in /openapi.json: {missing}"


# --- binding ----------------------------------------------------------------------------------------
def _node_cmd(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {"CORTEX_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cortex_node.cli.node", *args], capture_output=True, text=True,
                          timeout=30, env=full_env, cwd=REPO)


@pytest.mark.parametrize("how", ["flag", "env", "config", "ipv6"])
def test_a_non_loopback_bind_without_a_token_is_refused(tmp_path: Path, how: str) -> None:
    data = ["--port", "0", "--data-dir", str(tmp_path / "d")]
    if how == "flag":
        out = _node_cmd(tmp_path, "--host", "0.0.0.0", *data)
    elif how == "env":
        out = _node_cmd(tmp_path, *data, env={"CORTEX_SWARM_HOST": "0.0.0.0"})
    elif how == "config":
        cfg = tmp_path / "cfg.json"
        cfg.write_text(json.dumps({"swarm": {"host": "0.0.0.0"}}))
        out = _node_cmd(tmp_path, "--config", str(cfg), *data)
    else:
        out = _node_cmd(tmp_path, "--host", "::", *data)
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "without a swarm token" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "runtime.json").exists()


def test_a_non_loopback_bind_with_a_token_starts(nodes) -> None:
    node = nodes("wide", "--host", "0.0.0.0", *FAST, token=TOKEN)
    assert node.get("/api/swarm/nodes")[0] == 200
    assert node.get("/api/swarm/nodes", token=None)[0] == 401


# --- tier policy ------------------------------------------------------------------------------------
def _dispatch_self(node: Node, payload: dict[str, Any], kind: str = "execute_task") -> dict[str, Any]:
    status, doc = node.post("/api/swarm/directives", {"targetNodeId": node.node_id, "kind": kind,
                                                      "payload": payload, "ttlMs": 20_000})
    assert status == 200, doc
    return doc


def test_an_unprivileged_node_refuses_every_execute_task(nodes, tmp_path: Path) -> None:
    node = nodes("unpriv", *FAST, "--tier", "unprivileged")
    marker = tmp_path / "unpriv-ran"
    for payload in ({"command": ["touch", str(marker)]}, {"command": f"touch {marker}"},
                    {"command": f"touch {marker}", "shell": True}):
        doc = _dispatch_self(node, payload)
        assert doc["status"] == "failed" and "not_permitted" in doc["error"], doc
        inbound = node.directive_rows(doc["directiveId"], "inbound")
        assert len(inbound) == 1 and inbound[0]["status"] == "failed"
    assert not marker.exists()
    # what it may do still works: a query, and an agent type marked safe
    assert _dispatch_self(node, {}, kind="query_resources")["status"] == "completed"
    echo = _dispatch_self(node, {"agentType": "echo", "instruction": "hi"}, kind="spawn_agent")
    assert echo["status"] == "completed", echo


def test_a_sudo_node_runs_only_its_allow_list_and_never_a_shell(nodes, tmp_path: Path) -> None:
    cfg = tmp_path / "sudo.json"
    cfg.write_text(json.dumps({"swarm": {"allowedCommands": ["echo"]}}))
    node = nodes("sudo", *FAST, "--tier", "sudo", "--config", str(cfg))
    marker = tmp_path / "sudo-ran"
    ok = _dispatch_self(node, {"command": ["echo", "allowed"]})
    assert ok["status"] == "completed" and ok["output"]["stdout"] == "allowed\n", ok
    refused = [
        {"command": ["touch", str(marker)]},                       # not on the list
        {"command": ["sh", "-c", f"touch {marker}"]},              # a shell is not on the list either
        {"command": f"echo hi; touch {marker}", "shell": True},    # shell needs root
        {"command": ["./echo", "x"]},                              # a relative path is not the listed program
        {"command": ["echo", "x"], "env": {"PATH": str(tmp_path)}},  # nor may PATH change what 'echo' is
        {"command": ["echo", "x"], "env": {"LD_PRELOAD": str(marker)}},
    ]
    for payload in refused:
        doc = _dispatch_self(node, payload)
        assert doc["status"] == "failed" and "not_permitted" in doc["error"], (payload, doc)
    assert not marker.exists()
    # the string form is split into argv, never given to a shell: the ';' reaches echo as text
    injected = _dispatch_self(node, {"command": f"echo hi; touch {marker}"})
    assert injected["status"] == "completed" and injected["output"]["stdout"] == f"hi; touch {marker}\n"
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    {"command": "echo hi; touch {pwned}"},
    {"command": ["echo", "; touch {pwned}"]},
    {"command": "echo $(touch {pwned})"},
    {"command": ["echo", "`touch {pwned}`"]},
    {"command": "echo hi && touch {pwned} | cat"},
])
def test_argv_never_passes_through_a_shell_unless_root_asks(nodes, payload: dict[str, Any]) -> None:
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    node = nodes("root", *FAST)
    try:
        command = payload["command"]
        payload = {"command": command.replace("{pwned}", str(pwned)) if isinstance(command, str)
                   else [c.replace("{pwned}", str(pwned)) for c in command]}
        doc = _dispatch_self(node, payload)
        assert doc["status"] == "completed", doc
        assert not pwned.exists(), "a shell ran the injected command"
        assert str(pwned) in doc["output"]["stdout"]  # it reached echo as plain text
        # the positive control: root, asked explicitly, gets a shell
        asked = _dispatch_self(node, {"command": f"touch {pwned}", "shell": True})
        assert asked["status"] == "completed" and pwned.exists(), asked
    finally:
        pwned.unlink(missing_ok=True)


# --- replay and expiry ------------------------------------------------------------------------------
def _send(node: Node, message: dict[str, Any]) -> dict[str, Any]:
    status, doc = node.rpc("SendMessage", {"message": message}, timeout=30)
    assert status == 200, doc
    return doc


def test_a_replayed_directive_runs_at_most_once(nodes, tmp_path: Path) -> None:
    node = nodes("replay", *FAST, token=TOKEN)
    out = tmp_path / "replay.txt"
    message = directive_message("execute_task", {"command": ["sh", "-c", f"echo ran >> {out}"]})
    first = _send(node, message)["result"]["task"]
    assert first["status"]["state"] == "TASK_STATE_COMPLETED", first
    again = _send(node, message)["result"]["task"]
    assert again["id"] == first["id"] and again["status"]["state"] == "TASK_STATE_COMPLETED"
    # the same message from many clients at once
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _send(node, message), range(8)))
    assert all(a["result"]["task"]["id"] == first["id"] for a in answers)
    # and after a restart of the target (the replay is answered from the stored row)
    node.kill()
    node.start()
    after = _send(node, message)["result"]["task"]
    assert after["status"]["state"] == "TASK_STATE_COMPLETED"
    assert lines(out) == ["ran"]
    assert len(node.directive_rows(first["id"], "inbound")) == 1


def test_a_replay_while_the_first_run_is_still_going_waits_for_it(nodes, tmp_path: Path, marker: str) -> None:
    node = nodes("replay-live", *FAST)
    out = tmp_path / "live.txt"
    message = directive_message("execute_task", {"command": ["sh", "-c", f"echo ran >> {out}; sleep 1 # {marker}"]})
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _send(node, message), range(4)))
    states = {a["result"]["task"]["status"]["state"] for a in answers}
    assert states == {"TASK_STATE_COMPLETED"}
    assert lines(out) == ["ran"]


@pytest.mark.parametrize("when", ["expiresAt", "createdAt"])
def test_an_expired_directive_never_runs(nodes, tmp_path: Path, when: str) -> None:
    node = nodes("expiry", *FAST)
    marker = tmp_path / "expired-ran"
    stamps = {"expires_at": now_iso(-60_000)} if when == "expiresAt" else {"created_at": now_iso(-120_000)}
    message = directive_message("execute_task", {"command": ["touch", str(marker)]}, ttl_ms=30_000, **stamps)
    task = _send(node, message)["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_FAILED", task
    result = task["artifacts"][0]["parts"][0]["data"]
    assert result["status"] == "timed_out" and "expired" in result["error"]
    time.sleep(0.3)
    assert not marker.exists()
    (row,) = node.directive_rows(task["id"], "inbound")
    assert row["status"] == "timed_out"


# --- the token never leaks -------------------------------------------------------------------------
def _svg_text(svg: str) -> str:
    return re.sub(r"\s+", "", html.unescape(re.sub(r"<[^>]+>", "", svg)))


def _tui_screens(url: str, token: str) -> tuple[list[str], str]:
    """Render the dashboard's screens against a node; returns the text of each and the last error."""
    from cortex_tui.app import CortexTui
    from cortex_tui.client.rest import SwarmClient

    async def drive() -> tuple[list[str], str]:
        app = CortexTui(SwarmClient(url, token), interval_s=0.5)
        texts = []
        async with app.run_test(size=(180, 60)) as pilot:
            for _ in range(300):  # up to 15 s on a busy machine
                await pilot.pause(0.05)
                if app.fleet is not None or app.last_error:
                    break
            for key in ("1", "2", "question_mark", "escape", "1"):
                await pilot.press(key)
                await pilot.pause(0.3)
                texts.append(_svg_text(app.export_screenshot()))
        return texts, app.last_error

    return asyncio.run(drive())


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Two connected nodes logging at debug level: the most a node ever writes about itself."""
    base = tmp_path_factory.mktemp("leaky")
    a = Node(data_dir=base / "a", home=base / "home", name="leak-a", args=FAST + ["--log-level", "debug"],
             token=TOKEN).start()
    b = Node(data_dir=base / "b", home=base / "home", name="leak-b",
             args=FAST + ["--log-level", "debug", "--seed", a.url], token=TOKEN).start()
    try:
        wait_connected(a, b)
        yield a, b
    finally:
        a.kill()
        b.kill()


def _assert_no_leak(seen: list[tuple[str, str]], *logs_of: Node) -> None:
    logs = [(f"log of {n.name}", n.log_text()) for n in logs_of]
    assert all(text for _, text in logs), "a node log is empty; the check would be empty"
    leaks = [where for where, text in seen + logs if TOKEN in text]
    assert not leaks, f"the token appeared in: {leaks}"


def test_the_token_never_appears_in_answers_errors_metrics_events_or_logs(leaky: tuple[Node, Node]) -> None:
    a, b = leaky
    seen: list[tuple[str, str]] = []

    def keep(where: str, value: Any) -> None:
        seen.append((where, value if isinstance(value, str) else json.dumps(value)))

    # REST: successes, and every kind of error, with the right and with wrong tokens
    for path in ("/healthz", "/api/swarm/nodes", "/api/swarm/report", "/api/swarm/topology", "/metrics",
                 "/api/swarm/directives", "/api/nothing", "/api/swarm/directives?limit=0",
                 f"/api/swarm/nodes/{b.node_id}/events", "/.well-known/agent-card.json", "/openapi.json"):
        for token in (TOKEN, "wrong", TOKEN + "x", None):
            keep(f"GET {path} ({'right' if token == TOKEN else 'wrong'} token)", a.get(path, token=token))
    keep("POST bad json", http("POST", a.url + "/api/swarm/drain", raw=b"{nope", token=TOKEN))
    keep("POST too big", http("POST", a.url + "/api/swarm/drain", raw=b" " * (2 * 1024 * 1024), token=TOKEN))
    keep("405", http("DELETE", a.url + "/api/swarm/nodes", token=TOKEN))
    keep("dispatch env", a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "execute_task",
                                                          "payload": {"command": ["env"]}}))
    keep("dispatch query", a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "query_resources"}))
    keep("dispatch unknown", a.post("/api/swarm/directives", {"targetNodeId": "node_nope", "kind": "query_resources"}))
    keep("remote drain", a.post(f"/api/swarm/nodes/{b.node_id}/drain", {"reason": "leak test"}))
    keep("remote undrain", a.post(f"/api/swarm/nodes/{b.node_id}/undrain"))
    keep("a2a ops", a.rpc("SendMessage", {"message": {"messageId": "m1", "role": "ROLE_USER",
                                                      "parts": [{"text": "status"}]}}))
    keep("a2a wrong token", a.rpc("SendMessage", {"message": {}}, token="wrong"))
    keep("a2a bad params", a.rpc("GetTask", {"id": 5}))
    keep("a2a unknown method", a.rpc("Nope"))
    with urllib_stream(a.url + "/api/swarm/events", TOKEN) as read:
        keep("event stream", read(1.0))
    _assert_no_leak(seen, a, b)


def test_the_token_never_appears_in_cli_output(leaky: tuple[Node, Node]) -> None:
    a, b = leaky
    runs = [(args, ["--token", TOKEN], None) for args in (
        ["nodes"], ["nodes", "--json"], ["topology"], ["report"], ["directives"],
        ["dispatch", "query_resources", "--target", b.node_id],
        ["dispatch", "execute_task", "--target", b.node_id, "--payload", '{"command": ["env"]}'],
        ["drain", "--node", b.node_id], ["undrain", "--node", b.node_id])]
    runs += [(["nodes"], [], {"CORTEX_SWARM_TOKEN": TOKEN}), (["report", "--json"], [], {"CORTEX_SWARM_TOKEN": TOKEN}),
             (["nodes"], ["--token", "wrong"], None), (["nodes"], [], None)]

    def run(item: tuple[list[str], list[str], dict | None]) -> tuple[str, str]:
        args, extra, env = item
        out = run_cli("swarm", *args, "--url", a.url, *extra, home=a.home, env_extra=env)
        return f"cortex swarm {' '.join(args)} {' '.join(extra)}", out.stdout + out.stderr

    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(run, runs))
    out = run_cli("swarm", "nodes", "--url", "http://127.0.0.1:9", "--token", TOKEN, home=a.home)
    seen.append(("cli, no node answering", out.stdout + out.stderr))
    assert any("leak-b" in text for _, text in seen), "the CLI showed no fleet; the check would be empty"
    _assert_no_leak(seen, a, b)


def test_the_token_never_appears_in_the_tui(leaky: tuple[Node, Node], nodes) -> None:
    a, b = leaky
    seen = []
    texts, error = _tui_screens(a.url, TOKEN)
    assert any("leak-a" in t for t in texts), "the dashboard did not show the fleet; the check would be empty"
    seen.append(("tui", " ".join(texts) + error))
    other = nodes("leak-c", *FAST, token="another-token")
    texts, error = _tui_screens(other.url, TOKEN)
    assert error, "the dashboard should report the refused token"
    seen.append(("tui, token refused", " ".join(texts) + error))
    _assert_no_leak(seen, a, b, other)


class urllib_stream:
    """Read an SSE stream for a while (context manager returning a reader)."""

    def __init__(self, url: str, token: str) -> None:
        import urllib.request

        self._req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        self._resp = None

    def __enter__(self):
        import urllib.request

        self._resp = urllib.request.urlopen(self._req, timeout=5)

        def read(seconds: float) -> str:
            chunks, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                line = self._resp.readline()
                if not line:
                    break
                chunks.append(line.decode(errors="replace"))
            return "".join(chunks)

        return read

    def __exit__(self, *exc: Any) -> None:
        self._resp.close()


def test_the_token_is_not_in_a_commands_environment(nodes) -> None:
    """A node that took its token from CORTEX_SWARM_TOKEN does not hand it to what it runs."""
    node = nodes("env-token", *FAST, extra_env={"CORTEX_SWARM_TOKEN": TOKEN})
    node.token = TOKEN
    doc = _dispatch_self(node, {"command": ["env"]})
    assert doc["status"] == "completed" and "PATH=" in doc["output"]["stdout"]
    assert TOKEN not in json.dumps(doc)
    agent = _dispatch_self(node, {"agentType": "echo", "instruction": "hello"}, kind="spawn_agent")
    assert agent["status"] == "completed" and TOKEN not in json.dumps(agent)


@pytest.mark.parametrize("token_value", [987654321123456, ["sec-list-token-value"]])
def test_a_malformed_token_in_the_config_file_is_not_printed(tmp_path: Path, token_value: Any) -> None:
    """The flag and environment paths print '(hidden)' for a bad token; the config file path must too."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"swarm": {"token": token_value}}))
    out = _node_cmd(tmp_path, "--config", str(cfg), "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 2 and "swarm.token" in out.stderr, out.stderr
    shown = json.dumps(token_value).strip('"[]')
    assert shown not in out.stderr + out.stdout, out.stderr
    env = {"CORTEX_HOME": str(tmp_path / "home2")}
    (tmp_path / "home2").mkdir()
    (tmp_path / "home2" / "config.json").write_text(cfg.read_text())
    out = subprocess.run([sys.executable, "-m", "cortex_node.cli.swarm", "swarm", "nodes"], capture_output=True,
                         text=True, timeout=30, env={**env, "PATH": "/usr/bin:/bin"}, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert shown not in out.stderr + out.stdout, out.stderr


# --- per-client request limits ----------------------------------------------------------------------
def _rate_config(tmp_path: Path, rate: float) -> Path:
    cfg = tmp_path / f"rate-{rate}.json"
    cfg.write_text(json.dumps({"swarm": {"rateLimitPerSecond": rate}}))
    return cfg


def _flood(node: Node, path: str, count: int, workers: int = 16) -> list[tuple[int, dict[str, str], Any]]:
    import urllib.error
    import urllib.request

    def one(_: int) -> tuple[int, dict[str, str], Any]:
        req = urllib.request.Request(node.url + path)
        if node.token:
            req.add_header("Authorization", f"Bearer {node.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))


def test_a_flood_gets_429_with_retry_after_and_recovers(nodes, tmp_path: Path) -> None:
    node = nodes("limited", *FAST, "--config", str(_rate_config(tmp_path, 5)), token=TOKEN)
    started = time.monotonic()
    answers = _flood(node, "/api/swarm/nodes", 120)
    elapsed = time.monotonic() - started
    ok = [a for a in answers if a[0] == 200]
    limited = [a for a in answers if a[0] == 429]
    assert len(ok) + len(limited) == len(answers), {a[0] for a in answers}
    # burst 2 x 5, plus 5 a second while the flood lasted (and a little slack for scheduling)
    assert 1 <= len(ok) <= 10 + 5 * elapsed + 3, (len(ok), elapsed)
    assert len(limited) >= 60
    for status, headers, body in limited[:5]:
        retry = headers.get("Retry-After")
        assert retry is not None and retry.isdigit() and 1 <= int(retry) <= 60, headers
        doc = json.loads(body)
        assert doc["error"]["code"] == "too_many_requests" and TOKEN not in body.decode()
    # health is never limited, not even now
    assert all(s == 200 for s, _, _ in _flood(node, "/healthz", 30))
    # after Retry-After the client is served again
    time.sleep(int(limited[-1][1]["Retry-After"]))
    assert node.get("/api/swarm/nodes")[0] == 200


def test_heartbeats_pass_while_the_same_client_is_limited(nodes, tmp_path: Path) -> None:
    node = nodes("hb-limited", *FAST, "--config", str(_rate_config(tmp_path, 2)), token=TOKEN)
    answers = _flood(node, "/api/swarm/nodes", 40)
    assert any(s == 429 for s, _, _ in answers)
    beat = {"node": {"id": "node_fake_peer", "name": "fake-peer", "endpoint": "http://127.0.0.1:9"}}
    for _ in range(10):
        status, doc = node.rpc("SwarmHeartbeat", beat)
        assert status == 200 and "result" in doc, doc
    assert node.get("/api/swarm/nodes")[0] == 429  # still over the limit for anything else
    status, doc = node.rpc("GetTask", {"id": "x"})
    assert status == 429


def test_a_peer_stays_connected_through_a_flood_from_its_address(nodes, tmp_path: Path) -> None:
    cfg = _rate_config(tmp_path, 5)
    a = nodes("flooded", *FAST, "--config", str(cfg), token=TOKEN)
    b = nodes("peer", *FAST, "--config", str(cfg), "--seed", a.url, token=TOKEN)
    wait_connected(a, b)
    stop = threading.Event()
    statuses: list[int] = []

    def flood() -> None:
        while not stop.is_set():
            statuses.extend(s for s, _, _ in _flood(a, "/api/swarm/topology", 32, workers=8))

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        # longer than stale_after (1.5 s): a node that stopped hearing its peer would say so
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert http("GET", a.url + "/healthz")[0] == 200
            time.sleep(0.1)
    finally:
        stop.set()
        flooder.join()
    assert statuses.count(429) > 0
    # the reads below go through the same limit: wait for the bucket to refill
    wait_for(lambda: a.status_of(b.node_id) == "connected", timeout=5, interval=0.3, what="a to answer")
    assert b.status_of(a.node_id) == "connected"
    assert not [e for e in a.events_about(b.node_id) if e["kind"] == "disconnected"]
    assert not [e for e in b.events_about(a.node_id) if e["kind"] == "disconnected"]


def test_the_limit_can_be_set_from_the_environment_and_the_default_serves_normal_use(nodes) -> None:
    limited = nodes("env-limited", *FAST, extra_env={"CORTEX_SWARM_RATE_LIMIT": "3"})
    assert any(s == 429 for s, _, _ in _flood(limited, "/api/swarm/nodes", 40))
    default = nodes("default-limit", *FAST)
    assert all(default.get("/api/swarm/nodes")[0] == 200 for _ in range(100))
