"""A local daemon that runs commands is never drivable by a browser.

A web page the operator happens to open can send requests to 127.0.0.1 (a form, a "simple" fetch
with a text/plain body, a body-less POST in no-cors mode) or, with DNS rebinding, make its own
name resolve to 127.0.0.1 and then talk to the node as if it were its own origin. Against that:

* a node with no configured token makes its own operator token (``<data dir>/operator_token``,
  0600, kept across restarts) and requires it; the CLI and the TUI on the machine read it;
* a body must be declared JSON (415 otherwise), so nothing a page can send without a CORS
  preflight is ever parsed;
* an ``Origin`` that is not the node's own is refused (403), and so is a ``Host`` that is not
  one of its names (403): DNS rebinding ends there;
* ``/a2a`` takes the A2A version from the header only, never from the query string.

Each attack is sent to real ``cortex-node`` processes on 127.0.0.1, also *with* the right token
(as if the page had stolen it), to show every defence holds on its own; the outcome that matters
is checked each time: nothing ran, nothing changed, the node keeps serving and can be sealed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from tests.reliability.conftest import FAST
from tests.reliability.helpers import A2A_HEADERS, Node, assert_no_traceback, directive_message, wait_connected
from tests.support.nodes import REPO, http, wait_for

TOKEN = f"browser-{uuid.uuid4().hex}"
EVIL = "evil.example"


# --- a node started the way an operator starts one: no token anywhere -------------------------------
@dataclass
class Daemon:
    """``cortex-node`` with nothing but CORTEX_HOME (so its data directory is the default one,
    ``$CORTEX_HOME/swarm``, found by the CLI and the TUI the same way)."""

    home: Path
    args: tuple[str, ...] = ()
    port: int = 0
    proc: subprocess.Popen | None = None
    url: str = ""

    @property
    def data_dir(self) -> Path:
        return self.home / "swarm"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
        return {**env, "CORTEX_HOME": str(self.home)}

    def start(self) -> "Daemon":
        self.home.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "runtime.json").unlink(missing_ok=True)
        log = open(self.home / "node.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "cortex_node.cli.node", "--name", "plain",
                                      "--port", str(self.port), *FAST, *self.args],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env(), cwd=REPO)
        log.close()

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"cortex-node exited with {self.proc.returncode}: {self.log()[-2000:]}")
            info = json.loads((self.data_dir / "runtime.json").read_text())
            if info["pid"] != self.proc.pid:
                return False
            self.url, self.port = info["url"], info["port"]
            return http("GET", self.url + "/healthz")[0] == 200

        wait_for(up, 15, what="the node to answer")
        return self

    def log(self) -> str:
        return (self.home / "node.log").read_text(errors="replace")

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cortex_node.cli.swarm", "swarm", *args], capture_output=True,
                              text=True, timeout=30, env={**self.env(), **(extra_env or {})}, cwd=REPO)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


class Recorder(ThreadingHTTPServer):
    """A stranger's HTTP server: records the Authorization header of every request."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorder.seen.append(self.headers.get("Authorization"))
                body = b'{"error": {"code": "unauthorized", "message": "no"}}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def test_a_node_without_a_token_makes_one_keeps_it_and_requires_it(daemons: list[Daemon], tmp_path: Path) -> None:
    node = Daemon(tmp_path / "home")
    daemons.append(node.start())
    token_file = node.data_dir / "operator_token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token) >= 43  # secrets.token_urlsafe(32)
    assert token not in node.log() and str(token_file) in node.log()

    # it is required exactly like a configured token: nothing runs without it
    marker = tmp_path / "ran"
    send = {"message": directive_message("execute_task", {"command": ["touch", str(marker)]})}
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": send}
    for method, path, body in (("GET", "/api/swarm/nodes", None), ("GET", "/metrics", None),
                               ("POST", "/api/swarm/seal", {}), ("POST", "/api/swarm/drain", {}),
                               ("POST", "/a2a", rpc)):
        status, doc = http(method, node.url + path, body, headers=A2A_HEADERS)
        assert status == 401 and doc["error"]["code"] == "unauthorized", (path, status, doc)
    assert not marker.exists()
    # the public routes stay public
    for path in ("/healthz", "/.well-known/agent-card.json", "/openapi.json"):
        assert http("GET", node.url + path)[0] == 200, path
    status, health = http("GET", node.url + "/healthz")
    assert health["status"] == "online"
    # the right token opens it
    assert http("GET", node.url + "/api/swarm/nodes", token=token)[0] == 200

    # kept across a restart: the same token, still required
    node.kill()
    node.start()
    assert token_file.read_text().strip() == token
    assert http("GET", node.url + "/api/swarm/nodes")[0] == 401
    assert http("GET", node.url + "/api/swarm/nodes", token=token)[0] == 200
    (node.home / "config.json").write_text(json.dumps({"swarm": {"port": node.port}}))

    # the CLI on this machine finds it (data directory as the node resolves it), with or without --url
    out = node.cli("nodes", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["nodes"][0]["name"] == "plain"
    out = node.cli("nodes", "--url", node.url.replace("127.0.0.1", "localhost"))
    assert out.returncode == 0 and "plain" in out.stdout, out.stderr
    assert token not in out.stdout + out.stderr

    # ... and never sends it anywhere else
    stranger = Recorder()
    try:
        out = node.cli("nodes", "--url", stranger.url)
        assert out.returncode != 0 and stranger.seen == [None], (stranger.seen, out.stderr)
    finally:
        stranger.close()

    # the TUI resolves the same (cortex_tui may not import cortex_node.config: its own reader)
    from cortex_tui.client.config import resolve_connection

    env = {"CORTEX_HOME": str(node.home)}
    assert resolve_connection(None, None, env) == (node.url, token)
    assert resolve_connection(node.url, None, env) == (node.url, token)
    assert resolve_connection(stranger.url, None, env) == (stranger.url, None)

    # and it can still be sealed, by the CLI, with the token it found itself
    out = node.cli("seal")
    assert out.returncode == 0, out.stderr
    assert node.proc.wait(20) == 0


def test_a_configured_token_is_used_and_no_operator_token_is_made(daemons: list[Daemon], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    node = Daemon(tmp_path / "home", args=("--token-file", str(secret)))
    daemons.append(node.start())
    assert not (node.data_dir / "operator_token").exists()
    assert http("GET", node.url + "/api/swarm/nodes", token=TOKEN)[0] == 200
    assert http("GET", node.url + "/api/swarm/nodes")[0] == 401


# --- the attacks: each is sent without and with the right token ----------------------------------
def raw_request(url: str, method: str, path: str, headers: list[tuple[str, bytes | str]], body: bytes = b"",
                timeout: float = 5.0) -> tuple[int, Any]:
    """One request exactly as written (any Host, Origin, Content-Type, bytes that are not UTF-8)."""
    parts = urlsplit(url)
    lines = [f"{method} {path} HTTP/1.1".encode()]
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        lines.append(f"Host: {parts.netloc}".encode())
    for key, value in headers:
        lines.append(key.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = _unchunk(payload)
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2:]
    return out


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("browser")
    node = Node(data_dir=base / "data", home=base / "home", name="browser-target", args=FAST, token=TOKEN).start()
    yield node
    node.kill()


def _attacks(port: int, marker: Path) -> list[tuple[str, str, str, list[tuple[str, str]], bytes, int]]:
    """(name, method, path, headers, body, expected status)."""
    run = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": directive_message("execute_task", {"command": ["touch", str(marker)]})}}).encode()
    drain = json.dumps({"reason": "a web page"}).encode()
    state = json.dumps({"value": "from a web page"}).encode()
    dispatch = json.dumps({"targetEndpoint": f"http://127.0.0.1:{port}", "kind": "execute_task",
                           "payload": {"command": ["touch", str(marker)]}}).encode()
    a2a = [("A2A-Version", "1.0")]
    return [
        # what a page may send without a CORS preflight: forms and text/plain, never parsed (415)
        ("form to drain", "POST", "/api/swarm/drain", [("Content-Type", "application/x-www-form-urlencoded")],
         drain, 415),
        ("text/plain to /a2a", "POST", "/a2a", [("Content-Type", "text/plain"), *a2a], run, 415),
        ("text/plain dispatch", "POST", "/api/swarm/directives", [("Content-Type", "text/plain;charset=UTF-8")],
         dispatch, 415),
        ("multipart state write", "PUT", "/api/swarm/state/memory/browser",
         [("Content-Type", "multipart/form-data; boundary=x")], state, 415),
        ("a body with no type", "POST", "/a2a", a2a, run, 415),
        # a body-less no-cors POST carries no Content-Type, but a foreign Origin (403)
        ("no-cors seal", "POST", "/api/swarm/seal", [("Origin", f"http://{EVIL}")], b"", 403),
        ("no-cors drain from another local port", "POST", "/api/swarm/drain",
         [("Origin", f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}")], b"", 403),
        ("sandboxed page (Origin null)", "POST", "/api/swarm/seal", [("Origin", "null")], b"", 403),
        ("JSON with a foreign Origin", "POST", "/a2a",
         [("Content-Type", "application/json"), ("Origin", f"https://{EVIL}"), *a2a], run, 403),
        # DNS rebinding: the page's own name now points at 127.0.0.1; its Host gives it away (403)
        ("rebinding seal", "POST", "/api/swarm/seal",
         [("Host", f"{EVIL}:{port}"), ("Content-Type", "application/json")], b"{}", 403),
        ("rebinding dispatch", "POST", "/api/swarm/directives",
         [("Host", f"{EVIL}:{port}"), ("Content-Type", "application/json"), ("Origin", f"http://{EVIL}:{port}")],
         dispatch, 403),
        ("rebinding a2a", "POST", "/a2a", [("Host", f"{EVIL}:{port}"), ("Content-Type", "application/json"), *a2a],
         run, 403),
        ("rebinding read of health", "GET", "/healthz", [("Host", f"{EVIL}:{port}")], b"", 403),
        ("rebinding read of the card", "GET", "/.well-known/agent-card.json", [("Host", EVIL)], b"", 403),
        ("a name that looks like loopback", "GET", "/api/swarm/nodes", [("Host", f"127.0.0.1.{EVIL}:{port}")],
         b"", 403),
    ]


def _nothing_happened(node: Node, marker: Path) -> None:
    assert not marker.exists(), "a command ran"
    status, health = http("GET", node.url + "/healthz")
    assert status == 200 and health["status"] == "online", health  # not drained, not sealed
    assert node.proc.poll() is None
    assert node.get("/api/swarm/state/memory/browser")[0] == 404
    assert node.query("SELECT COUNT(*) FROM swarm_directives") == [(0,)]
    assert not [e for e in node.events_about(node.node_id) if e["kind"] in ("draining", "sealed")]


@pytest.mark.parametrize("with_token", [False, True], ids=["no token", "stolen token"])
def test_requests_a_browser_can_make_drive_nothing(target: Node, tmp_path: Path, with_token: bool) -> None:
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    auth = [("Authorization", f"Bearer {TOKEN}")] if with_token else []
    for name, method, path, headers, body, expected in _attacks(target.port, marker):
        status, doc = raw_request(target.url, method, path, [*headers, *auth], body)
        # without the token a 415/403 may come first or the 401: either way nothing is served
        allowed = {expected} if with_token else {expected, 401}
        assert status in allowed, (name, status, doc)
        assert isinstance(doc, dict) and doc["error"]["code"] in (
            "unsupported_media_type", "forbidden", "unauthorized"), (name, doc)
        assert TOKEN not in json.dumps(doc)
    _nothing_happened(target, marker)
    assert_no_traceback(target.log_text(), "the node's log")


def test_the_a2a_version_is_read_from_the_header_only(target: Node, tmp_path: Path) -> None:
    marker = tmp_path / "ran-version"
    body = {"jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": {
        "message": directive_message("execute_task", {"command": ["touch", str(marker)]})}}
    status, doc = http("POST", target.url + "/a2a?A2A-Version=1.0", body, token=TOKEN)
    assert status == 200 and doc["error"]["code"] == -32009, doc  # no header: 0.3, refused
    status, doc = http("POST", target.url + "/a2a?A2A-Version=1.0", body, token=TOKEN,
                       headers={"A2A-Version": "0.3"})
    assert doc["error"]["code"] == -32009, doc  # the header wins, the query is not even looked at
    _nothing_happened(target, marker)
    # the control: the header alone is enough
    status, doc = target.rpc("GetTask", {"id": "nope"})
    assert doc["error"]["code"] == -32001, doc


def test_the_nodes_own_names_and_origins_pass(nodes, tmp_path: Path) -> None:
    """Host: IP literals, localhost (loopback bind), the advertise URL's host, swarm.allowedHosts
    (a name and a ".suffix"); Origin: the node's own. Everything else is refused."""
    cfg = tmp_path / "hosts.json"
    cfg.write_text(json.dumps({"swarm": {"allowedHosts": ["cortex-a.test", ".fleet.test"]}}))
    probe = nodes("names", *FAST, "--config", str(cfg), start=False, token=TOKEN)
    probe.port = _free_port()
    probe.args += ["--advertise-url", f"http://node-a.test:{probe.port}"]
    node = probe.start()
    auth = [("Authorization", f"Bearer {TOKEN}")]
    port = node.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", f"node-a.test:{port}",
                 "cortex-a.test", f"edge-7.fleet.test:{port}", "10.1.2.3:80", "CORTEX-A.TEST."):
        status, doc = raw_request(node.url, "GET", "/api/swarm/nodes", [("Host", host), *auth])
        assert status == 200, (host, status, doc)
    for host in (EVIL, f"node-b.test:{port}", "fleet.test.evil.example", "xfleet.test", f"{EVIL}@127.0.0.1",
                 "localhost.evil.example", "a b"):
        status, doc = raw_request(node.url, "GET", "/api/swarm/nodes", [("Host", host), *auth])
        assert status in (400, 403), (host, status, doc)
    for origin in (f"http://127.0.0.1:{port}", f"http://node-a.test:{port}"):
        status, doc = raw_request(node.url, "POST", "/api/swarm/undrain",
                                  [("Origin", origin), ("Content-Type", "application/json"), *auth], b"{}")
        assert status == 200, (origin, status, doc)
    for origin in (f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}/x", f"http://localhost:{port + 1}"):
        status, doc = raw_request(node.url, "POST", "/api/swarm/undrain",
                                  [("Origin", origin), ("Content-Type", "application/json"), *auth], b"{}")
        assert status == 403, (origin, status, doc)
    assert http("POST", node.url + "/api/swarm/seal", {}, token=TOKEN)[0] in (200, 202)
    assert node.wait_exit(20) == 0


def test_peers_keep_talking_through_the_host_check_also_by_name_and_with_advertise_urls(nodes, tmp_path: Path) -> None:
    """aiohttp sends Host = the URL's host:port. Peers reached by name (localhost) and a peer
    that advertises a URL with a name still heartbeat, dispatch and control each other."""
    a = nodes("host-a", *FAST, token=TOKEN, start=False)
    a.port = _free_port()
    a.args += ["--advertise-url", f"http://localhost:{a.port}"]
    a.start()
    b = nodes("host-b", *FAST, "--seed", f"http://localhost:{a.port}", token=TOKEN)
    wait_connected(a, b)
    doc = b.post("/api/swarm/directives", {"targetNodeId": a.node_id, "kind": "query_resources"})[1]
    assert doc["status"] == "completed", doc
    assert b.post(f"/api/swarm/nodes/{a.node_id}/drain", {"reason": "by name"})[0] == 200
    wait_for(lambda: b.status_of(a.node_id) == "draining", 10, what="b to see a draining")
    assert b.post(f"/api/swarm/nodes/{a.node_id}/undrain")[0] == 200
    assert "localhost" in {urlsplit(n["endpoint"]).hostname for n in b.get("/api/swarm/nodes")[1]["nodes"]}
    for n in (a, b):
        assert "HTTP 403" not in n.log_text(), n.log_tail()
    # both seal cleanly
    for n in (a, b):
        n.signal(signal.SIGTERM)
        assert n.wait_exit(20) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
