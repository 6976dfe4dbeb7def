"""What a peer (or a token holder speaking as one) can send a node, and what it cannot do with it.

Real ``cortex-node`` processes on loopback, and small fake peers (``FakePeer``: a thread serving
an agent card and JSON-RPC answers the test chooses, recording every request it gets). Each test
performs the attack and then shows the outcome that matters: nothing registered or run, the
swarm token never sent where it should not go, the node still serving and still able to seal.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from tests.reliability.conftest import FAST
from tests.reliability.helpers import Node, directive_message
from tests.support.nodes import http, wait_for

TOKEN = f"peer-attack-{uuid.uuid4().hex}"
INVALID_PARAMS = -32602
EXT = "https://cortex-swarm.dev/a2a/extensions/swarm/v1"


class FakePeer:
    """A loopback HTTP server posing as a node: ``card`` is its agent card (None: 404; a str: a
    redirect to that URL; bytes: sent as they are), ``rpc(method, params)`` answers JSON-RPC.
    ``requests`` records (method, path, Authorization header) of everything it received."""

    def __init__(self, node_id: str | None = None, *, card: Any = ..., rpc: Callable[[str, Any], Any] | None = None):
        self.requests: list[tuple[str, str, str | None]] = []
        self.rpc = rpc or (lambda method, params: {"nodeId": node_id, "digestVersion": "v0", "members": []})
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                peer.requests.append(("GET", self.path, self.headers.get("Authorization")))
                card = peer.card
                if card is None or not self.path.startswith("/.well-known/"):
                    self._send(404, b"{}")
                elif isinstance(card, str):
                    self._send(302, b"", {"Location": card + self.path})
                elif isinstance(card, bytes):
                    self._send(200, card)
                else:
                    self._send(200, json.dumps(card).encode())

            def do_POST(self) -> None:
                peer.requests.append(("POST", self.path, self.headers.get("Authorization")))
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                answer = {"jsonrpc": "2.0", "id": request.get("id"),
                          "result": peer.rpc(request.get("method"), request.get("params"))}
                self._send(200, json.dumps(answer).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.card = card_for(node_id, self.url) if card is ... else card
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def authorized_requests(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[2]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def card_for(node_id: str | None, base: str) -> dict[str, Any]:
    return {"name": node_id or "not-a-node", "version": "0.1.0",
            "supportedInterfaces": [{"url": base + "/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "capabilities": {"extensions": [{"uri": EXT, "params": {"nodeId": node_id, "group": "default",
                                                                     "tier": "root"}}] if node_id else []}}


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakePeer]]:
    made: list[FakePeer] = []

    def make(*args: Any, **kwargs: Any) -> FakePeer:
        made.append(FakePeer(*args, **kwargs))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def beat(node_id: str, endpoint: Any, **extra: Any) -> dict[str, Any]:
    """SwarmHeartbeat params from a peer that calls itself ``node_id`` at ``endpoint``."""
    node = {"id": node_id, "name": node_id, "endpoint": endpoint, **extra.pop("node", {})}
    return {"node": node, "lifecycle": "active", "metrics": {}, "counters": {}, "processes": [], **extra}


def sleeper(seconds: float, marker: str) -> list[str]:
    """argv of a command that sleeps, with the test's marker on its command line (for kill_strays)."""
    return [sys.executable, "-c", f"import time; time.sleep({seconds})", marker]


def seals_cleanly(node: Node) -> None:
    """The node still answers, and SIGTERM still seals it (exit 0)."""
    assert node.get("/healthz")[0] == 200
    node.signal(signal.SIGTERM)
    assert node.wait_exit(15) == 0, node.log_tail()


def test_a_heartbeat_claiming_the_nodes_own_address_is_refused_and_the_node_keeps_working(nodes) -> None:
    a = nodes("a", *FAST, token=TOKEN)
    status, doc = a.rpc("SwarmHeartbeat", beat("node_intruder", a.url))
    assert status == 200 and doc["error"]["code"] == INVALID_PARAMS and "own" in doc["error"]["message"], doc
    assert set(a.statuses()) == {a.node_id}  # our own row is still there, and nothing else
    status, doc = a.rpc("SendMessage", {"message": directive_message("query_resources", {})})
    assert doc["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED", doc
    seals_cleanly(a)


@pytest.mark.parametrize("endpoint, extra, says", [
    ("http://user:secret@127.0.0.1:9", {}, "user name or password"),
    (5, {}, "node.endpoint"),
    ("ftp://127.0.0.1:9", {}, "http:// or https://"),
    ("http://127.0.0.1:9/x?y=1", {}, "query"),
    ("http://127.0.0.1:9", {"node": {"a2aEndpoint": "http://198.51.100.7:4220/a2a"}}, "own JSON-RPC URL"),
    ("http://127.0.0.1:9", {"node": {"labels": {"a": {"b": {"c": "d"}}}}}, "labels"),
    ("http://127.0.0.1:9", {"node": {"name": "n" * 5000}}, "node.name"),
    ("http://127.0.0.1:9", {"processes": [{"pid": i, "name": "x", "role": "agent", "status": "running",
                                            "nodeId": "node_big", "parentPid": None} for i in range(1025)]},
     "at most 1024"),
], ids=["userinfo", "not-a-string", "scheme", "query", "foreign-a2a", "nested-labels", "long-name", "processes"])
def test_a_peer_registration_is_validated_before_anything_is_kept(nodes, endpoint, extra, says) -> None:
    a = nodes("a", *FAST, token=TOKEN)
    status, doc = a.rpc("SwarmHeartbeat", beat("node_big", endpoint, **extra))
    assert status == 200 and doc["error"]["code"] == INVALID_PARAMS and says in doc["error"]["message"], doc
    assert set(a.statuses()) == {a.node_id}
    assert a.get("/api/swarm/nodes")[0] == 200 and a.get("/api/swarm/topology")[0] == 200
    seals_cleanly(a)


def test_digest_members_are_registered_only_when_their_own_card_says_so_and_get_no_token(nodes, fakes) -> None:
    trap = fakes("node_someone_else")  # answers a card, but for another id
    real = fakes("node_real")  # a member whose card confirms the digest
    redirect = fakes(None, card=trap.url)  # its card is a redirect to the trap
    members = [
        {"id": "node_trap", "endpoint": trap.url, "a2aEndpoint": trap.url + "/a2a"},
        {"id": "node_redirect", "endpoint": redirect.url},
        {"id": "node_bad_type", "endpoint": 5},
        {"id": "node_userinfo", "endpoint": "http://u:p@" + trap.url.split("//", 1)[1]},
        {"id": "node_real", "endpoint": real.url},
        "not a member",
    ]
    seed = fakes("node_seed", rpc=lambda method, params: {"nodeId": "node_seed", "digestVersion": "v1",
                                                          "members": members})
    a = nodes("a", *FAST, "--seed", seed.url, token=TOKEN)
    wait_for(lambda: "node_real" in a.statuses(), timeout=15, what="the verified member registered")
    wait_for(lambda: len(seed.authorized_requests()) >= 3, timeout=15, what="a few heartbeats to the seed")
    known = set(a.statuses())
    assert known == {a.node_id, "node_seed", "node_real"}, known
    assert not trap.authorized_requests() and not redirect.authorized_requests()
    assert all(path.startswith("/.well-known/") for _, path, _ in trap.requests + redirect.requests)
    assert not any(r[0] == "GET" and "redirect" in r[1] for r in trap.requests)  # the redirect was not followed
    seals_cleanly(a)


def test_an_oversized_card_is_refused_and_the_node_keeps_working(nodes, fakes) -> None:
    huge = fakes(None, card=b'{"name": "' + b"x" * (1024 * 1024) + b'"}')
    a = nodes("a", *FAST, "--seed", huge.url, token=TOKEN)
    wait_for(lambda: huge.requests, timeout=10, what="the node to ask for the card")
    wait_for(lambda: "larger than" in a.log_text(), timeout=10, what="the refusal in the log")
    assert set(a.statuses()) == {a.node_id}
    seals_cleanly(a)


def test_a_directive_whose_ttl_runs_out_in_the_queue_never_starts(nodes, marker, tmp_path) -> None:
    a = nodes("a", *FAST, token=TOKEN, extra_env={"CORTEX_SWARM_MAX_WORKERS": "1"})
    proof = tmp_path / "started"
    blocker = directive_message("execute_task", {"command": sleeper(2, marker)}, ttl_ms=20_000)
    late = directive_message("execute_task", {"command": ["touch", str(proof)]}, ttl_ms=400)
    a.rpc("SendMessage", {"message": blocker, "configuration": {"returnImmediately": True}})
    a.rpc("SendMessage", {"message": late, "configuration": {"returnImmediately": True}})
    late_id = late["metadata"]["swarmDirectiveId"]
    rows = wait_for(lambda: [r for r in a.directive_rows(late_id) if r["status"] != "pending"], timeout=15,
                    what="the late directive to end")
    assert rows[0]["status"] == "timed_out" and "did not run" in rows[0]["error"], rows
    wait_for(lambda: a.directive_rows(blocker["metadata"]["swarmDirectiveId"])[0]["status"] == "completed",
             timeout=15, what="the blocker to finish")
    assert not proof.exists()


def test_sync_state_answers_are_bounded(nodes) -> None:
    a = nodes("a", *FAST, token=TOKEN)
    for i in range(300):
        status, _ = http("PUT", f"{a.url}/api/swarm/state/memory/k{i:03d}", {"value": i}, token=TOKEN)
        assert status == 200
    status, doc = http("PUT", f"{a.url}/api/swarm/state/memory/big", {"value": "x" * (70 * 1024)}, token=TOKEN)
    assert status == 400 and "larger than" in doc["error"]["message"], doc
    msg = directive_message("sync_state", {"namespace": "memory", "entries": {}, "digest": {}})
    status, doc = a.rpc("SendMessage", {"message": msg})
    result = doc["result"]["task"]["artifacts"][0]["parts"][0]["data"]
    assert result["status"] == "completed" and len(result["output"]["entries"]) == 256, result["status"]
    assert result["output"]["more"] is True
    too_many = {f"x{i}": {"value": i, "version": {"hlc": 1, "origin": "node_p"}} for i in range(257)}
    msg = directive_message("sync_state", {"namespace": "memory", "entries": too_many})
    status, doc = a.rpc("SendMessage", {"message": msg})
    result = doc["result"]["task"]["artifacts"][0]["parts"][0]["data"]
    assert result["status"] == "failed" and "at most 256" in result["error"], result


def test_an_operator_forgets_a_peer_and_everything_kept_about_it(nodes) -> None:
    a = nodes("a", *FAST, token=TOKEN)
    status, doc = a.rpc("SwarmHeartbeat", beat("node_gone", "http://127.0.0.1:9"))
    assert "result" in doc, doc
    assert "node_gone" in a.statuses()
    assert a.query("SELECT COUNT(*) FROM swarm_resource_snapshots WHERE node_id = 'node_gone'")[0][0] == 1
    status, doc = a.post("/api/swarm/nodes/node_gone/forget")
    assert status == 200 and doc == {"forgotten": "node_gone"}
    assert "node_gone" not in a.statuses()
    for table in ("swarm_resource_snapshots", "swarm_usage_hourly", "swarm_node_events", "nodes"):
        column = "id" if table == "nodes" else "node_id"
        assert a.query(f"SELECT COUNT(*) FROM {table} WHERE {column} = 'node_gone'")[0][0] == 0, table
    assert a.post(f"/api/swarm/nodes/{a.node_id}/forget")[0] == 409
    assert a.post("/api/swarm/nodes/node_never/forget")[0] == 404


def test_a_busy_dispatcher_keeps_heartbeating(nodes, marker) -> None:
    """Long directives hold the work pool's connections for their whole TTL; heartbeats have
    their own pool, so the target never sees a busy dispatcher as gone."""
    b = nodes("b", *FAST, token=TOKEN)
    a = nodes("a", *FAST, "--seed", b.url, token=TOKEN)
    wait_for(lambda: b.status_of(a.node_id) == "connected", timeout=15, what="a and b connected")
    sent = []
    for _ in range(60):  # more than the work pool's 50 connections per host
        status, doc = a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "execute_task",
                                                     "payload": {"command": sleeper(4, marker)},
                                                     "ttlMs": 15_000, "wait": False})
        assert status == 202
        sent.append(doc["directiveId"])
    wait_for(lambda: b.get_ok("/healthz")["queue"]["running"] == 8, timeout=10, what="b busy with a's work")
    end = time.monotonic() + 3 * 1.5  # three stale-after periods
    while time.monotonic() < end:
        assert b.status_of(a.node_id) == "connected", "the dispatcher was taken for gone"
        time.sleep(0.2)
    assert b.get_ok("/healthz")["queue"]["queued"] > 0  # the work was still holding its connections


def test_fresh_ids_cannot_grow_the_registry_past_its_limit_and_silent_ones_are_forgotten(nodes) -> None:
    a = nodes("a", *FAST, token=TOKEN, extra_env={"CORTEX_SWARM_MAX_NODES": "3",
                                                  "CORTEX_SWARM_FORGET_AFTER_MS": "1000"})
    answers = [a.rpc("SwarmHeartbeat", beat(f"node_fake{i}", f"http://127.0.0.1:{9 + i}"))[1] for i in range(5)]
    assert ["result" in doc for doc in answers] == [True, True, False, False, False], answers
    assert "maxNodes" in answers[2]["error"]["message"]
    assert len(a.statuses()) == 3
    # silent for longer than forgetAfterMs (after stale_after made them disconnected): forgotten
    wait_for(lambda: set(a.statuses()) == {a.node_id}, timeout=15, what="the silent fakes forgotten")
    assert a.query("SELECT COUNT(*) FROM swarm_resource_snapshots WHERE node_id LIKE 'node_fake%'")[0][0] == 0
    assert "result" in a.rpc("SwarmHeartbeat", beat("node_fake9", "http://127.0.0.1:19"))[1]  # room again
    seals_cleanly(a)


def test_the_work_queue_is_bounded_and_says_so(nodes, marker) -> None:
    a = nodes("a", *FAST, token=TOKEN, extra_env={"CORTEX_SWARM_MAX_WORKERS": "1", "CORTEX_SWARM_MAX_QUEUED": "2"})
    sent = [directive_message("execute_task", {"command": sleeper(3, marker)}, ttl_ms=20_000) for _ in range(4)]
    states = []
    for msg in sent:
        status, doc = a.rpc("SendMessage", {"message": msg, "configuration": {"returnImmediately": True}})
        states.append(doc["result"]["task"]["status"]["state"])
    assert states[-1] == "TASK_STATE_REJECTED", states
    assert "TASK_STATE_REJECTED" not in states[:-1], states
    row = a.directive_rows(sent[-1]["metadata"]["swarmDirectiveId"])[0]
    assert row["status"] == "failed" and "queue_full" in row["error"], row
    status, doc = a.rpc("SendMessage", {"message": directive_message("query_resources", {})})
    assert doc["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"  # reads are still answered


def test_a_token_holder_cannot_make_the_node_send_its_token_to_an_address_it_names(nodes, fakes) -> None:
    """A heartbeat names its sender's address; the node sends its own heartbeats (and so the
    token) there only once the card at that address confirms the sender's id."""
    victim = fakes("node_victim")  # a real service at that address, which is not the sender
    honest = fakes("node_honest")  # a sender whose card does confirm it
    a = nodes("a", *FAST, token=TOKEN)
    for _ in range(3):
        assert "result" in a.rpc("SwarmHeartbeat", beat("node_liar", victim.url))[1]
        assert "result" in a.rpc("SwarmHeartbeat", beat("node_honest", honest.url))[1]
        time.sleep(0.4)  # more than one heartbeat interval of a
    wait_for(lambda: honest.authorized_requests(), timeout=10, what="heartbeats to the confirmed sender")
    assert victim.requests, "the node should have checked the claimed address's card"
    assert not victim.authorized_requests(), victim.requests
    assert all(method == "GET" for method, _, _ in victim.requests)


def test_a_peer_writing_its_address_differently_does_not_move_the_membership_every_beat(nodes) -> None:
    """A heartbeat's URLs are compared as they are stored: a trailing slash must not re-register
    the peer (and so change the digest, which every peer would then download again) on every beat."""
    a = nodes("a", *FAST, token=TOKEN)
    slashed = {"node": {"a2aEndpoint": "http://127.0.0.1:9/a2a/"}}
    first = a.rpc("SwarmHeartbeat", beat("node_slash", "http://127.0.0.1:9/", **slashed))[1]["result"]
    for _ in range(3):
        again = a.rpc("SwarmHeartbeat", beat("node_slash", "http://127.0.0.1:9/", digestVersion=first["digestVersion"],
                                             **slashed))[1]["result"]
        assert again == {"nodeId": a.node_id, "digestVersion": first["digestVersion"], "unchanged": True}, again
