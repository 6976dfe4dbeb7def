"""Limits at the HTTP edge, each shown against real ``cortex-node`` processes on 127.0.0.1:

* auth runs before the per-client limit: a client with a wrong token (or none) draws on its own
  bucket and can never use up the operator's; an over-limit body is looked into only as far as
  telling a heartbeat needs (at most 256 KiB, parsed only when it names a membership method);
* the token can come from a file (``--token-file``), so it never shows in ``ps``;
  ``cortex swarm init`` keeps the config file private;
* a non-UTF-8 ``Authorization`` header is a 401, not a 500; error messages quote at most 80
  characters of what the client sent; ``127.evil.example`` is not a loopback address;
* held-open connections: a per-address cap and a header deadline, so idle or trickling sockets
  cannot take the node's descriptors, and it keeps answering and heartbeating;
* the event stream tells each subscriber its own dropped count.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import FAST
from tests.reliability.helpers import A2A_HEADERS, Node, assert_no_traceback, wait_connected
from tests.reliability.test_browser import Daemon, raw_request
from tests.support.nodes import REPO, http, run_cli, wait_for

TOKEN = f"limits-{uuid.uuid4().hex}"


def _config(tmp_path: Path, **swarm: Any) -> Path:
    path = tmp_path / f"cfg-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"swarm": swarm}))
    return path


def _get_many(url: str, count: int, token: str | None, workers: int = 16) -> list[int]:
    def one(_: int) -> int:
        return http("GET", url, token=token)[0]

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))


# --- auth before the limit -------------------------------------------------------------------------
def test_wrong_token_floods_never_use_up_the_operators_requests(nodes, tmp_path: Path) -> None:
    node = nodes("auth-first", *FAST, "--config", str(_config(tmp_path, rateLimitPerSecond=5)), token=TOKEN)
    wrong = _get_many(node.url + "/api/swarm/nodes", 60, "wrong")
    anonymous = _get_many(node.url + "/openapi.json", 30, None)
    assert set(wrong) <= {401, 429} and wrong.count(429) >= 30, wrong  # failed attempts have their own bucket
    assert set(anonymous) <= {200, 429} and 429 in anonymous, anonymous
    # right after: the operator's whole burst (2 x 5) is still there
    assert [node.get("/api/swarm/nodes")[0] for _ in range(10)] == [200] * 10
    assert node.get("/api/swarm/nodes")[0] == 429  # and the limit still applies to the operator
    status, doc = http("GET", node.url + "/api/swarm/nodes", token="wrong")
    assert status in (401, 429) and TOKEN not in json.dumps(doc)
    assert http("GET", node.url + "/healthz")[0] == 200


def test_an_over_limit_body_is_looked_into_only_as_far_as_a_heartbeat_needs(nodes, tmp_path: Path) -> None:
    node = nodes("sniff", *FAST, "--config", str(_config(tmp_path, rateLimitPerSecond=2)), token=TOKEN)
    assert 429 in _get_many(node.url + "/api/swarm/nodes", 20, TOKEN)
    beat = {"node": {"id": "node_fake_peer", "name": "fake-peer", "endpoint": "http://127.0.0.1:9"}}
    status, doc = node.rpc("SwarmHeartbeat", beat)
    assert status == 200 and "result" in doc, doc  # membership still passes
    # the same heartbeat padded past 256 KiB: over the limit it is not read, let alone parsed
    padded = {**beat, "labels": {"pad": "x" * 300_000}}
    status, doc = node.rpc("SwarmHeartbeat", padded)
    assert status == 429 and doc["error"]["code"] == "too_many_requests", (status, doc)
    # naming a membership method somewhere in the body does not make it one (it is parsed to tell)
    status, doc = node.rpc("GetTask", {"id": "SwarmHeartbeat"})
    assert status == 429, (status, doc)
    raw = b'{"jsonrpc": "2.0", "id": 1, "method": "SwarmHeartbeat", "method": "SendMessage", "params": {}}'
    assert node.rpc_raw(raw)[0] == 429  # json.loads reads the last "method", and so does the check
    assert http("GET", node.url + "/healthz")[0] == 200


# --- the token in a file ---------------------------------------------------------------------------
def _node_cmd(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {"CORTEX_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cortex_node.cli.node", *args], capture_output=True, text=True,
                          timeout=30, env=full_env, cwd=REPO)


def _secret(tmp_path: Path, value: str = TOKEN) -> Path:
    path = tmp_path / f"token-{uuid.uuid4().hex[:8]}"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_a_token_file_keeps_the_token_out_of_ps(nodes, tmp_path: Path, how: str) -> None:
    secret = _secret(tmp_path)
    if how == "flag":
        node = nodes("tf", *FAST, "--token-file", str(secret))
    elif how == "env":
        node = nodes("tf", *FAST, extra_env={"CORTEX_SWARM_TOKEN_FILE": str(secret)})
    else:
        node = nodes("tf", *FAST, "--config", str(_config(tmp_path, tokenFile=str(secret))))
    node.token = TOKEN
    cmdline = Path(f"/proc/{node.proc.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in cmdline
    assert node.get("/api/swarm/nodes")[0] == 200
    assert node.get("/api/swarm/nodes", token=None)[0] == 401
    out = run_cli("swarm", "nodes", "--url", node.url, "--token-file", str(secret), home=tmp_path / "cli-home")
    assert out.returncode == 0 and "tf" in out.stdout, out.stderr
    assert TOKEN not in out.stdout + out.stderr + node.log_text()


def test_token_file_mistakes_are_one_line_that_never_shows_the_token(tmp_path: Path) -> None:
    secret = _secret(tmp_path)
    data = ["--port", "0", "--data-dir", str(tmp_path / "d")]
    cases = [
        (["--token", TOKEN, "--token-file", str(secret)], None, "either --token or --token-file"),
        (["--token-file", str(tmp_path / "absent")], None, "does not exist"),
        (["--token-file", str(_secret(tmp_path, f"two {TOKEN}"))], None, "one token"),
        ([], {"CORTEX_SWARM_TOKEN": TOKEN, "CORTEX_SWARM_TOKEN_FILE": str(secret)}, "not both"),
        (["--config", str(_config(tmp_path, token=TOKEN, tokenFile=str(secret)))], None, "not both"),
    ]
    for args, env, says in cases:
        out = _node_cmd(tmp_path, *args, *data, env=env)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert TOKEN not in out.stderr + out.stdout and "Traceback" not in out.stderr
    assert not (tmp_path / "d" / "runtime.json").exists()
    out = _node_cmd(tmp_path, "--help")
    assert "--token-file" in out.stdout and "prefer --token-file" in " ".join(out.stdout.split())


def _kill_detached(home: Path) -> None:
    pid_file = home / "swarm" / "node.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_swarm_init_keeps_the_config_file_private(tmp_path: Path) -> None:
    kept, fresh = tmp_path / "kept", tmp_path / "fresh"
    kept.mkdir()
    cfg = kept / "config.json"
    cfg.write_text(json.dumps({"swarm": {"token": TOKEN}}))
    cfg.chmod(0o600)
    try:
        for home in (kept, fresh):
            out = run_cli("swarm", "init", "--name", home.name, "--port", str(_free_port()), "--detach", "--json",
                          home=home)
            assert out.returncode == 0, out.stderr
            assert stat.S_IMODE((home / "config.json").stat().st_mode) == 0o600, home
            assert TOKEN not in out.stdout + out.stderr
            # the CLI finds its way in: the config's token, or the node's own operator token
            out = run_cli("swarm", "seal", home=home)
            assert out.returncode == 0, out.stderr
        assert json.loads(cfg.read_text())["swarm"]["token"] == TOKEN
        assert stat.S_IMODE((fresh / "swarm" / "operator_token").stat().st_mode) == 0o600
    finally:
        for home in (kept, fresh):
            _kill_detached(home)


# --- odd input at the edge -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("edge")
    node = Node(data_dir=base / "data", home=base / "home", name="edge", args=FAST, token=TOKEN).start()
    yield node
    node.kill()


NOT_UTF8 = {"binary": b"Bearer \xff\xfe\x80", "latin-1": "Bearer caf\u00e9".encode("latin-1"),
            "the token and one byte": b"Bearer " + TOKEN.encode() + b"\xff", "broken sequence": b"\xc3\x28"}


@pytest.mark.parametrize("kind", list(NOT_UTF8))
def test_an_authorization_header_that_is_not_utf8_is_a_401(edge: Node, kind: str) -> None:
    value = NOT_UTF8[kind]
    before = len(edge.log_text())
    for path in ("/api/swarm/nodes", "/metrics", "/a2a"):
        status, doc = raw_request(edge.url, "GET" if path != "/a2a" else "POST", path,
                                  [("Authorization", value), ("Content-Type", "application/json"), *A2A_HEADERS.items()],
                                  b"{}" if path == "/a2a" else b"")
        assert status == 401 and doc["error"]["code"] == "unauthorized", (path, status, doc)
    assert_no_traceback(edge.log_text()[before:], "the node's log")
    assert edge.get("/api/swarm/nodes")[0] == 200


def test_error_messages_quote_at_most_80_characters_of_the_input(edge: Node) -> None:
    long = "z" * 5000
    answers = [
        edge.get(f"/api/swarm/nodes/{long}"),
        edge.get(f"/api/swarm/directives/{long}"),
        edge.get(f"/api/swarm/state/memory/{'k' * 200}"),
        edge.get(f"/api/swarm/directives?status={long}"),
        edge.get(f"/api/swarm/directives?limit={'9' * 4000}"),
        edge.get(f"/api/swarm/nodes/{edge.node_id}/snapshots?since={long}"),
        edge.get(f"/api/{long}"),
        http("DELETE", edge.url + f"/api/swarm/nodes?{long}", token=TOKEN),
        raw_request(edge.url, "GET", "/healthz", [("Host", "h" * 5000)]),
        raw_request(edge.url, "POST", "/api/swarm/drain", [("Content-Type", "text/" + "p" * 5000)], b"{}"),
        raw_request(edge.url, "GET", "/healthz", [("Origin", "http://" + "o" * 5000)]),
    ]
    for status, doc in answers:
        assert 400 <= status < 500, (status, doc)
        message = doc["error"]["message"]
        assert len(message) < 400, (status, message[:500])
        assert not any(c * 81 in message for c in "zkh9po"), message  # at most 80 characters quoted…
        assert "…" in message or not any(c * 20 in message for c in "zkh9po"), message  # …and the cut shown
    status, doc = raw_request(edge.url, "POST", "/a2a", [("Authorization", f"Bearer {TOKEN}"),
                                                          ("Content-Type", "application/json"), ("A2A-Version", long)],
                              b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}')
    assert doc["error"]["code"] == -32009 and len(doc["error"]["message"]) < 400, doc
    for method, params in ((long, {}), ("GetTask", {"id": long}), ("CancelTask", {"id": long})):
        status, doc = edge.rpc(method, params)
        message = doc["error"]["message"]
        assert len(message) < 400 and "z" * 81 not in message and "…" in message, (method[:20], message[:500])


def test_a_name_that_starts_with_127_is_not_loopback(tmp_path: Path, nodes) -> None:
    out = _node_cmd(tmp_path, "--host", "127.evil.example", "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 1 and "without a swarm token" in out.stderr, out.stderr
    # every 127.x.y.z address is loopback: no token needed to bind it (the node makes its own)
    node = Daemon(tmp_path / "home2", args=("--host", "127.0.0.2"))
    try:
        node.start()
        assert node.url.startswith("http://127.0.0.2:")
        token = (node.data_dir / "operator_token").read_text().strip()
        assert http("GET", node.url + "/api/swarm/nodes", token=token)[0] == 200
    finally:
        node.kill()


# --- held-open connections -------------------------------------------------------------------------
ATTACKER = "127.0.0.2"  # another loopback address: the node, its peer and the checks use 127.0.0.1
HELD = 300
PER_CLIENT = 256  # the default cap (swarm.maxConnectionsPerClient)


def _open_connections(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def _closed_by_peer(sock: socket.socket, answers: dict[int, bytes]) -> bool:
    """Read what is there without blocking; True once the node has closed the connection."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, OSError):
        return True
    if data:
        answers[sock.fileno()] = answers.get(sock.fileno(), b"") + data
        return False
    return True


def _fds(node: Node) -> int:
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))


def test_held_open_connections_cannot_starve_the_node(nodes, tmp_path: Path) -> None:
    cfg = _config(tmp_path, headerTimeoutMs=5000)
    a = nodes("held", *FAST, "--config", str(cfg), token=TOKEN)
    b = nodes("held-peer", *FAST, "--seed", a.url, token=TOKEN)
    wait_connected(a, b)
    fds_before = _fds(a)
    socks: list[socket.socket] = []
    try:
        started = time.monotonic()
        socks = _open_connections(a.port, HELD)
        for s in socks[:20]:  # slowloris: a request header that never ends
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answers: dict[int, bytes] = {}
        closed: set[int] = set()

        def refused() -> int:
            for s in socks:
                if s.fileno() not in closed and _closed_by_peer(s, answers):
                    closed.add(s.fileno())
            return len(closed)

        # those over the per-address cap get a short 503 and are closed at once
        wait_for(lambda: refused() >= HELD - PER_CLIENT, 5, what="the connections over the cap to be refused")
        assert time.monotonic() - started < 4.5, "the check ran past the header deadline; it proves nothing"
        assert refused() == HELD - PER_CLIENT, refused()
        refusals = [answers[fd] for fd in closed if fd in answers]
        assert refusals and all(r.startswith(b"HTTP/1.1 503") and b"too many open connections" in r
                                for r in refusals), refusals[:2]
        # meanwhile: a fresh connection is served, the descriptors held are bounded, the peer beats on
        assert http("GET", a.url + "/healthz")[0] == 200
        assert a.get("/api/swarm/nodes")[0] == 200
        assert _fds(a) <= fds_before + PER_CLIENT + 16, (_fds(a), fds_before)
        assert a.status_of(b.node_id) == "connected" and b.status_of(a.node_id) == "connected"

        # the header deadline (5 s here; 10 s by default) closes every held socket, trickling or idle
        wait_for(lambda: refused() == HELD, 10, interval=0.2, what="the node to close the held connections")
        held_for = time.monotonic() - started
        assert held_for > 1.5  # longer than stale_after: a node starved of descriptors would have lost its peer
        assert not any(answers.get(s.fileno(), b"").startswith(b"HTTP/1.1 200") for s in socks[:20])
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: _fds(a) <= fds_before + 16, 10, what="the node's descriptors to come back")
    assert a.status_of(b.node_id) == "connected" and b.status_of(a.node_id) == "connected"
    for x, y in ((a, b), (b, a)):
        assert not [e for e in x.events_about(y.node_id) if e["kind"] == "disconnected"]
    assert_no_traceback(a.log_text(), "the node's log")
    a.signal(signal.SIGTERM)  # and it still seals
    assert a.wait_exit(20) == 0


@pytest.mark.slow
def test_a_body_that_never_finishes_is_a_408_and_the_connection_closes(nodes) -> None:
    """A request whose body stops half way holds no handler for longer than 30 s (slow: it waits them out)."""
    node = nodes("slow-body", *FAST, token=TOKEN)
    with socket.create_connection(("127.0.0.1", node.port), timeout=45) as sock:
        sock.sendall(b"POST /api/swarm/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n".encode() + b'{"reason": ')
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
        while chunk := sock.recv(65536):  # then closed (after aiohttp's 10 s of lingering at most)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:300]
    assert 25 < waited < 35, waited
    assert node.get("/healthz")[1]["status"] == "online"  # the half body drained nothing


# --- the event stream ------------------------------------------------------------------------------
async def test_each_event_stream_subscriber_sees_only_its_own_dropped_count() -> None:
    """In-process (the drop needs a subscriber that fell behind by 1,000 events): the event
    object is shared by every subscriber; the count must go into a copy."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from cortex_node.api.routes import COORDINATOR, routes
    from cortex_node.swarm.change_feed import ChangeFeed

    class Feed:
        def __init__(self) -> None:
            self.hub = ChangeFeed()
            self.subs: list[Any] = []
            self.shutdown_requested = asyncio.Event()

        def subscribe(self) -> Any:
            sub = self.hub.subscribe()
            self.subs.append(sub)
            return sub

    feed = Feed()
    app = web.Application()
    app[COORDINATOR] = feed  # type: ignore[assignment]
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()

    async def next_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
        while True:
            line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
            if line.startswith("data: "):
                return json.loads(line[6:])

    try:
        async with aiohttp.ClientSession() as http_session:
            url = str(server.make_url("/api/swarm/events"))
            async with http_session.get(url) as slow, http_session.get(url) as fast:
                await asyncio.wait_for(_until(lambda: len(feed.subs) == 2), 5)
                behind, prompt = feed.subs
                behind.dropped = 7  # it missed seven events
                event = {"id": 1, "kind": "node.heartbeat", "data": {"nodeId": "n1"}}
                behind.queue.put_nowait(event)
                assert await next_event(slow) == {"nodeId": "n1", "droppedBefore": 7}
                prompt.queue.put_nowait(event)  # the very same object, after the other wrote it
                assert await next_event(fast) == {"nodeId": "n1"}
                assert event["data"] == {"nodeId": "n1"}
            feed.shutdown_requested.set()
    finally:
        await server.close()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)
