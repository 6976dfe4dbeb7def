"""Bad input at POST /a2a (JSON-RPC) and at the REST API: the right error code (or 413), never a
5xx, never a traceback in a body, never a RecursionError, and the node keeps working afterwards.

A hypothesis fuzz drives the JSON-RPC endpoint of a real node (unprivileged tier, so a fuzzed
message that happens to be a valid execute_task still cannot run anything).
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import FAST
from tests.reliability.helpers import Node, directive_message
from tests.support.nodes import http, wait_for

TOKEN = f"fuzz-{uuid.uuid4().hex}"
PARSE, INVALID_REQUEST, NO_METHOD, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603
# every code an answer to a client's mistake may carry; -32603 (internal error) is not among them
CLIENT_CODES = {PARSE, INVALID_REQUEST, NO_METHOD, INVALID_PARAMS, -32001, -32002, -32003, -32004, -32005,
                -32007, -32008, -32009}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("bad-input")
    node = Node(data_dir=base / "data", home=base / "home", name="bad-input",
                args=FAST + ["--tier", "unprivileged"], token=TOKEN).start()
    yield node
    node.kill()


@pytest.fixture
def fresh(nodes) -> Node:
    """A node of its own, for inputs that, when they are mishandled, would break the node for the
    tests after them (the failure then shows once, where it happens)."""
    return nodes("fresh", *FAST, "--tier", "unprivileged", token=TOKEN)


@pytest.fixture(scope="module")
def counters_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("counters")
    node = Node(data_dir=base / "data", home=base / "home", name="counters", args=FAST, token=TOKEN).start()
    yield node
    node.kill()


class LogWatch:
    """What a node logged from now on (to find tracebacks a request caused)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.start = len(node.log_text())

    def new(self) -> str:
        return self.node.log_text()[self.start:]

    def assert_clean(self) -> None:
        text = self.new()
        assert "Traceback" not in text and "RecursionError" not in text, text[-4000:]


def check_envelope(status: int, doc: Any, *, code: int | set[int] | None = None, rpc_id: Any = ...) -> None:
    """HTTP 200 with a JSON-RPC 2.0 answer; with ``code``, an error with that code."""
    assert status == 200, (status, doc)
    assert isinstance(doc, dict) and doc.get("jsonrpc") == "2.0", doc
    assert "Traceback" not in json.dumps(doc)
    if rpc_id is not ...:
        assert doc.get("id") == rpc_id, doc
    if code is None:
        return
    assert "error" in doc, doc
    codes = code if isinstance(code, set) else {code}
    assert doc["error"]["code"] in codes, doc["error"]
    assert isinstance(doc["error"]["message"], str)
    for info in doc["error"].get("data", []):
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["domain"] == "a2a-protocol.org"


def rpc(method: str, params: Any = ..., rpc_id: Any = 1) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
    if params is not ...:
        body["params"] = params
    return json.dumps(body).encode()


@contextlib.contextmanager
def deep_parsing(limit: int = 20_000) -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


ENVELOPE_CASES = [
    ("invalid JSON", b"{bad", PARSE, None),
    ("empty body", b"", PARSE, None),
    ("truncated", b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask"', PARSE, None),
    ("not UTF-8", b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}', {PARSE, INVALID_REQUEST, NO_METHOD}, ...),
    ("batch", rpc("GetTask", {"id": "x"}).join([b"[", b"]"]), INVALID_REQUEST, None),
    ("empty batch", b"[]", INVALID_REQUEST, None),
    ("number", b"5", INVALID_REQUEST, None),
    ("string", b'"SendMessage"', INVALID_REQUEST, None),
    ("null", b"null", INVALID_REQUEST, None),
    ("jsonrpc 1.0", b'{"jsonrpc": "1.0", "id": 1, "method": "GetTask"}', INVALID_REQUEST, 1),
    ("jsonrpc missing", b'{"id": 1, "method": "GetTask"}', INVALID_REQUEST, 1),
    ("jsonrpc number", b'{"jsonrpc": 2.0, "id": 1, "method": "GetTask"}', INVALID_REQUEST, 1),
    ("id object", b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "GetTask"}', INVALID_REQUEST, None),
    ("id list", b'{"jsonrpc": "2.0", "id": [1], "method": "GetTask"}', INVALID_REQUEST, None),
    ("id float", b'{"jsonrpc": "2.0", "id": 1.5, "method": "GetTask"}', INVALID_REQUEST, None),
    ("id bool", b'{"jsonrpc": "2.0", "id": true, "method": "GetTask"}', INVALID_REQUEST, None),
    ("method missing", b'{"jsonrpc": "2.0", "id": 7}', INVALID_REQUEST, 7),
    ("method number", b'{"jsonrpc": "2.0", "id": 7, "method": 5}', INVALID_REQUEST, 7),
    ("method empty", b'{"jsonrpc": "2.0", "id": 7, "method": ""}', INVALID_REQUEST, 7),
    ("unknown method", rpc("tasks/explode"), NO_METHOD, 1),
    ("params list", rpc("GetTask", [1, 2]), INVALID_PARAMS, 1),
    ("params string", rpc("GetTask", "x"), INVALID_PARAMS, 1),
    ("GetTask id int", rpc("GetTask", {"id": 5}), INVALID_PARAMS, 1),
    ("GetTask id missing", rpc("GetTask", {}), INVALID_PARAMS, 1),
    ("GetTask historyLength -1", rpc("GetTask", {"id": "x", "historyLength": -1}), INVALID_PARAMS, 1),
    ("ListTasks pageSize text", rpc("ListTasks", {"pageSize": "many"}), INVALID_PARAMS, 1),
    ("ListTasks pageSize huge", rpc("ListTasks", {"pageSize": 10 ** 30}), INVALID_PARAMS, 1),
    ("ListTasks status bogus", rpc("ListTasks", {"status": "TASK_STATE_BORED"}), INVALID_PARAMS, 1),
    ("ListTasks pageToken forged", rpc("ListTasks", {"pageToken": "abc"}), INVALID_PARAMS, 1),
    ("ListTasks timestamp bogus", rpc("ListTasks", {"statusTimestampAfter": "yesterday"}), INVALID_PARAMS, 1),
    ("CancelTask id null", rpc("CancelTask", {"id": None}), INVALID_PARAMS, 1),
    ("CancelTask unknown", rpc("CancelTask", {"id": "nope"}), -32001, 1),
    ("SendMessage message string", rpc("SendMessage", {"message": "hi"}), INVALID_PARAMS, 1),
    ("SendMessage no parts", rpc("SendMessage", {"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}}),
     INVALID_PARAMS, 1),
    ("SendMessage part kinds", rpc("SendMessage", {"message": {"messageId": "m", "role": "ROLE_USER",
                                                               "parts": [{"text": "a", "data": {}}]}}),
     INVALID_PARAMS, 1),
    ("SendMessage role", rpc("SendMessage", {"message": {"messageId": "m", "role": "user", "parts": [{"text": "a"}]}}),
     INVALID_PARAMS, 1),
    ("SendMessage configuration", rpc("SendMessage", {"message": {"messageId": "m", "role": "ROLE_USER",
                                                                  "parts": [{"text": "a"}]}, "configuration": 5}),
     INVALID_PARAMS, 1),
    ("SendMessage bad directive", rpc("SendMessage", {"message": {
        "messageId": "m", "role": "ROLE_USER", "parts": [{"data": {"payload": 5}}],
        "metadata": {"swarmKind": "execute_task", "swarmDirectiveId": "dir_x", "swarmTtlMs": "soon"}}}),
     INVALID_PARAMS, 1),
    ("SendMessage unknown kind", rpc("SendMessage", {"message": {
        "messageId": "m", "role": "ROLE_USER", "parts": [{"data": {}}],
        "metadata": {"swarmKind": "launch_missiles", "swarmDirectiveId": "dir_y"}}}), INVALID_PARAMS, 1),
    ("SendMessage ttl zero", rpc("SendMessage", {"message": directive_message("query_resources", {}, ttl_ms=0)}),
     INVALID_PARAMS, 1),
    ("SendMessage id too long", rpc("SendMessage", {"message": directive_message(
        "query_resources", {}, directive_id="dir_" + "x" * 500)}), INVALID_PARAMS, 1),
    ("SubscribeToTask no id", rpc("SubscribeToTask", {}), INVALID_PARAMS, 1),
    ("push config", rpc("CreateTaskPushNotificationConfig", {"taskId": "x", "url": "http://x"}), -32003, 1),
    ("SwarmHeartbeat node int", rpc("SwarmHeartbeat", {"node": 5}), INVALID_PARAMS, 1),
    ("SwarmHeartbeat empty", rpc("SwarmHeartbeat", {}), INVALID_PARAMS, 1),
    ("SwarmHeartbeat counters list", rpc("SwarmHeartbeat", {"node": {"id": "node_f", "name": "f",
                                                                     "endpoint": "http://127.0.0.1:9"},
                                                            "counters": [1]}), INVALID_PARAMS, 1),
    ("SwarmControl action", rpc("SwarmControl", {"action": "explode"}), INVALID_PARAMS, 1),
    ("SwarmControl reason", rpc("SwarmControl", {"action": "drain", "reason": 5}), INVALID_PARAMS, 1),
    ("SwarmLeave unknown", rpc("SwarmLeave", {"nodeId": "node_nobody"}), INVALID_PARAMS, 1),
]


@pytest.mark.parametrize("name, raw, code, rpc_id", ENVELOPE_CASES, ids=[c[0] for c in ENVELOPE_CASES])
def test_json_rpc_envelope_errors(target: Node, name: str, raw: bytes, code: Any, rpc_id: Any) -> None:
    watch = LogWatch(target)
    status, doc = target.rpc_raw(raw)
    check_envelope(status, doc, code=code, rpc_id=rpc_id)
    watch.assert_clean()


def test_missing_version_header_is_version_not_supported(target: Node) -> None:
    status, doc = http("POST", target.url + "/a2a", raw=rpc("GetTask", {"id": "x"}), token=TOKEN)
    check_envelope(status, doc, code=-32009, rpc_id=1)


def test_a_request_without_id_is_answered_with_a_null_id(target: Node) -> None:
    status, doc = target.rpc_raw(b'{"jsonrpc": "2.0", "method": "GetTask", "params": {"id": "x"}}')
    check_envelope(status, doc, code=-32001, rpc_id=None)


@pytest.mark.parametrize("where", ["body", "params", "metadata", "data part", "heartbeat labels"])
def test_ten_thousand_levels_of_nesting(target: Node, where: str) -> None:
    watch = LogWatch(target)
    deep = nested(10_000)
    raw = {
        "body": deep,
        "params": '{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x", "deep": %s}}' % deep,
        "metadata": '{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"messageId": "m",'
                    ' "role": "ROLE_USER", "parts": [{"text": "status"}], "metadata": {"d": %s}}}}' % deep,
        "data part": '{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"messageId": "m",'
                     ' "role": "ROLE_USER", "parts": [{"data": {"d": %s}}], "metadata": {"swarmKind":'
                     ' "query_resources", "swarmDirectiveId": "dir_deep"}}}}' % deep,
        "heartbeat labels": '{"jsonrpc": "2.0", "id": 1, "method": "SwarmHeartbeat", "params": {"node": {"id":'
                            ' "node_d", "name": "d", "endpoint": "http://127.0.0.1:9", "labels": %s}}}' % deep,
    }[where]
    status, doc = target.rpc_raw(raw.encode())
    check_envelope(status, doc, code={PARSE, INVALID_REQUEST, INVALID_PARAMS})
    watch.assert_clean()
    assert target.get("/healthz")[0] == 200


def test_nesting_just_below_the_parsers_limit_never_gives_an_internal_error(fresh: Node) -> None:
    """json.loads accepts ~960 levels; whatever the node then does with such a document (store it,
    echo it in a task's history, render it) must not hit Python's recursion limit."""
    target = fresh
    watch = LogWatch(target)
    bad = []
    for depth in range(880, 1000, 4):
        deep = nested(depth)
        bodies = {
            "directive data": '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m%s",'
                              '"role":"ROLE_USER","parts":[{"data":{"x":%s}}],"metadata":{"swarmKind":"query_resources",'
                              '"swarmDirectiveId":"dir_%s"}}}}' % (uuid.uuid4().hex, deep, uuid.uuid4().hex[:10]),
            "message metadata": '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m",'
                                '"role":"ROLE_USER","parts":[{"text":"help"}],"metadata":{"d":%s}}}}' % deep,
            "stream metadata": '{"jsonrpc":"2.0","id":1,"method":"SendStreamingMessage","params":{"message":{'
                               '"messageId":"m","role":"ROLE_USER","parts":[{"text":"help"}],"metadata":{"d":%s}}}}' % deep,
        }
        for where, raw in bodies.items():
            with deep_parsing():  # the answer may echo the document: this process must read it
                status, doc = target.rpc_raw(raw.encode(), timeout=30)
            if status != 200 or (isinstance(doc, dict) and doc.get("error", {}).get("code") == INTERNAL):
                bad.append((where, depth, status, str(doc)[:120]))
    assert not bad, bad
    watch.assert_clean()
    # and the node still renders its directive trail, whatever was stored
    assert target.get("/api/swarm/directives?limit=1000")[0] == 200


def test_deep_nesting_inside_a_string_of_the_legacy_envelope(target: Node) -> None:
    """The older CortexPrism form double-encodes the payload as a JSON string; a deep one must be
    refused like any malformed directive."""
    watch = LogWatch(target)
    envelope = json.dumps({"kind": "query_resources", "payload": nested(10_000), "sourceNodeId": "node_old"})
    status, doc = target.rpc("SendMessage", {"message": {"messageId": f"m-{uuid.uuid4().hex}", "role": "ROLE_USER",
                                                         "parts": [{"text": envelope}]}})
    check_envelope(status, doc, code={INVALID_PARAMS})
    watch.assert_clean()


@pytest.mark.parametrize("field", ["method", "id", "messageId", "text part", "task id"])
def test_huge_strings(target: Node, field: str) -> None:
    watch = LogWatch(target)
    huge = "x" * 900_000
    if field == "method":
        status, doc = target.rpc_raw(rpc(huge))
        check_envelope(status, doc, code=NO_METHOD)
    elif field == "id":
        status, doc = target.rpc_raw(rpc("GetTask", {"id": "x"}, rpc_id=huge))
        check_envelope(status, doc, code=-32001, rpc_id=huge)
    elif field == "messageId":
        status, doc = target.rpc("SendMessage", {"message": {"messageId": huge, "role": "ROLE_USER",
                                                             "parts": [{"text": "help"}]}})
        check_envelope(status, doc)
    elif field == "text part":
        status, doc = target.rpc("SendMessage", {"message": {"messageId": "m", "role": "ROLE_USER",
                                                             "parts": [{"text": huge}]}})
        check_envelope(status, doc)
        assert "result" in doc
    else:
        status, doc = target.rpc("GetTask", {"id": huge})
        check_envelope(status, doc, code=-32001)
    watch.assert_clean()


@pytest.mark.parametrize("path", ["/a2a", "/api/swarm/directives", "/api/swarm/drain"])
def test_a_two_mebibyte_body_is_413_and_the_node_goes_on(target: Node, path: str) -> None:
    watch = LogWatch(target)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                       "params": {"message": {"messageId": "m", "role": "ROLE_USER",
                                              "parts": [{"text": "x" * (2 * 1024 * 1024)}]}}}).encode()
    status, doc = http("POST", target.url + path, raw=body, token=TOKEN, headers={"A2A-Version": "1.0"})
    assert status == 413, (status, str(doc)[:200])
    assert doc["error"]["code"] == "payload_too_large" and "Traceback" not in json.dumps(doc)
    assert target.get("/healthz")[1]["status"] == "online"
    assert target.get("/api/swarm/nodes")[0] == 200
    watch.assert_clean()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e308", "-5", '"12"', "true", "null"])
def test_a_heartbeat_with_impossible_counters_is_refused_and_changes_nothing(counters_target: Node,
                                                                            value: str) -> None:
    """Counters are cumulative, finite and never negative; anything else is -32602, not an internal
    error, and must not reach the snapshots or the report."""
    target = counters_target
    watch = LogWatch(target)
    peer = f"node_counter_{uuid.uuid4().hex[:8]}"
    raw = ('{"jsonrpc":"2.0","id":1,"method":"SwarmHeartbeat","params":{"node":{"id":"%s","name":"c",'
           '"endpoint":"http://127.0.0.1:9/%s"},"counters":{"tokensIn":%s,"costUsd":%s,"memoryUsedMb":%s}}}'
           % (peer, peer, value, value, value))
    status, doc = target.rpc_raw(raw.encode())
    check_envelope(status, doc, code={PARSE, INVALID_PARAMS})
    watch.assert_clean()
    status, snaps = target.get(f"/api/swarm/nodes/{peer}/snapshots")
    assert status == 404 or snaps["snapshots"] == [], snaps
    report = target.get("/api/swarm/report")[1]
    assert all(n["tokensIn"] >= 0 and n["costUsd"] >= 0 for n in report["perNode"]), report


# --- hypothesis: fuzz the JSON-RPC endpoint ---------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def maybe(strategy: st.SearchStrategy, other: st.SearchStrategy = json_value) -> st.SearchStrategy:
    """Mostly the well-typed value, sometimes anything: reaches deep validation and its edges."""
    return st.one_of(strategy, strategy, strategy, other)


parts = st.lists(maybe(st.one_of(
    st.fixed_dictionaries({"text": maybe(st.text(max_size=40))}),
    st.fixed_dictionaries({"data": json_value}),
    st.fixed_dictionaries({"url": maybe(st.text(max_size=20))}),
    st.fixed_dictionaries({"raw": maybe(st.sampled_from(["aGVsbG8=", "!!", ""]))}))), max_size=3)
swarm_metadata = st.fixed_dictionaries({}, optional={
    "swarmKind": maybe(st.sampled_from(["query_resources", "execute_task", "spawn_agent", "forward_message",
                                        "sync_state", "nope"])),
    "swarmDirectiveId": maybe(st.text(min_size=0, max_size=20)),
    "swarmTtlMs": maybe(st.integers(min_value=-10, max_value=10 ** 12)),
    "swarmPriority": maybe(st.sampled_from(["low", "normal", "high", "critical", "urgent"])),
    "swarmSourceNodeId": json_value,
})
message = st.fixed_dictionaries({}, optional={
    "messageId": maybe(st.text(min_size=1, max_size=20)),
    "role": maybe(st.sampled_from(["ROLE_USER", "ROLE_AGENT", "user"])),
    "parts": maybe(parts),
    "contextId": maybe(st.text(max_size=10)),
    "taskId": maybe(st.text(max_size=10)),
    "metadata": maybe(swarm_metadata),
})
heartbeat = st.fixed_dictionaries({}, optional={
    "node": maybe(st.fixed_dictionaries({"id": maybe(st.text(min_size=1, max_size=12)),
                                         "name": maybe(st.text(max_size=12)),
                                         "endpoint": maybe(st.sampled_from(["http://127.0.0.1:9", "nope", ""]))},
                                        optional={"tier": json_value, "labels": json_value,
                                                  "bootId": json_value, "groupName": json_value})),
    "metrics": maybe(st.dictionaries(st.sampled_from(["cpuPercent", "memoryUsedMb", "activeProcesses"]),
                                     json_value, max_size=3)),
    "counters": maybe(st.dictionaries(st.sampled_from(["tokensIn", "costUsd", "cpuMs", "uptimeSeconds"]),
                                      json_value, max_size=3)),
    "lifecycle": maybe(st.sampled_from(["active", "draining", "sealed", "gone"])),
    "processes": json_value,
})
rpc_calls = st.one_of(
    st.tuples(st.just("SendMessage"), maybe(st.fixed_dictionaries({"message": message},
                                                                  optional={"configuration": json_value,
                                                                            "metadata": json_value}))),
    st.tuples(st.just("GetTask"), maybe(st.fixed_dictionaries({}, optional={"id": json_value,
                                                                            "historyLength": json_value}))),
    st.tuples(st.just("ListTasks"), maybe(st.fixed_dictionaries({}, optional={
        "pageSize": json_value, "pageToken": json_value, "status": json_value, "contextId": json_value,
        "statusTimestampAfter": json_value, "includeArtifacts": json_value, "historyLength": json_value}))),
    st.tuples(st.just("CancelTask"), maybe(st.fixed_dictionaries({}, optional={"id": json_value}))),
    st.tuples(st.just("SwarmHeartbeat"), maybe(heartbeat)),
    st.tuples(st.text(max_size=20), json_value),
)
rpc_ids = st.one_of(st.integers(min_value=-(2 ** 40), max_value=2 ** 40), st.text(max_size=10), st.none(),
                    json_value)


def _fuzz_one(target: Node, call: tuple[str, Any], rpc_id: Any, jsonrpc: Any) -> None:
    method, params = call
    watch = LogWatch(target)
    raw = json.dumps({"jsonrpc": jsonrpc, "id": rpc_id, "method": method, "params": params}).encode()
    status, doc = target.rpc_raw(raw, timeout=30)
    check_envelope(status, doc)
    if "error" in doc:
        assert doc["error"]["code"] in CLIENT_CODES, (method, params, doc)
    else:
        assert "result" in doc
    watch.assert_clean()


FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])


@settings(max_examples=250, derandomize=True, **FUZZ)
@given(call=rpc_calls, rpc_id=rpc_ids, jsonrpc=maybe(st.just("2.0")))
def test_fuzzed_json_rpc_never_gives_an_internal_error(target: Node, call: tuple[str, Any], rpc_id: Any,
                                                        jsonrpc: Any) -> None:
    _fuzz_one(target, call, rpc_id, jsonrpc)


@pytest.mark.slow
@settings(max_examples=3000, derandomize=False, **FUZZ)
@given(call=rpc_calls, rpc_id=rpc_ids, jsonrpc=maybe(st.just("2.0")))
def test_fuzzed_json_rpc_never_gives_an_internal_error_long(target: Node, call: tuple[str, Any], rpc_id: Any,
                                                             jsonrpc: Any) -> None:
    _fuzz_one(target, call, rpc_id, jsonrpc)


def test_after_the_fuzz_the_node_still_reads_and_writes_and_left_nothing_unfinished(target: Node) -> None:
    for path in ("/api/swarm/nodes", "/api/swarm/report", "/api/swarm/topology", "/api/swarm/directives?limit=1000",
                 "/metrics"):
        assert target.get(path)[0] == 200, path
    status, doc = target.post("/api/swarm/directives", {"targetNodeId": target.node_id, "kind": "query_resources"})
    assert status == 200 and doc["status"] == "completed", doc
    # every directive any of the tests above got in reached a terminal state
    wait_for(lambda: target.query("SELECT COUNT(*) FROM swarm_directives WHERE status IN ('pending', 'dispatched')")
             == [(0,)], timeout=10, what="no directive row left unfinished")


def test_a_directive_with_a_malformed_timestamp_leaves_no_unfinished_row(fresh: Node) -> None:
    target = fresh
    message = directive_message("query_resources", {}, expires_at="tomorrow-ish")
    status, doc = target.rpc("SendMessage", {"message": message})
    check_envelope(status, doc, code=INVALID_PARAMS)
    rows = target.directive_rows(message["metadata"]["swarmDirectiveId"])
    assert all(r["status"] not in ("pending", "dispatched") for r in rows), rows
    status, task = target.rpc("GetTask", {"id": message["metadata"]["swarmDirectiveId"]})
    check_envelope(status, task)
    assert "error" in task or task["result"]["status"]["state"] not in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")


# --- REST -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [100, 600, 950, 10_000])
def test_deeply_nested_rest_bodies_never_5xx_nor_poison_later_reads(fresh: Node, depth: int) -> None:
    target = fresh
    watch = LogWatch(target)
    deep = nested(depth)
    key = f"deep{depth}"
    requests = [
        ("POST", "/api/swarm/directives",
         '{"targetNodeId": "%s", "kind": "sync_state", "payload": {"x": %s}}' % (target.node_id, deep)),
        ("PUT", f"/api/swarm/state/memory/{key}", '{"value": %s}' % deep),
        ("POST", "/api/swarm/drain", '{"reason": "x", "deep": %s}' % deep),
    ]
    for method, path, raw in requests:
        status, doc = http(method, target.url + path, raw=raw.encode(), token=TOKEN, timeout=30)
        assert status < 500, (method, path, depth, status, str(doc)[:300])
    # whatever was accepted can be read back: the audit trail and the state key still render
    for path in ("/api/swarm/directives?limit=1000", f"/api/swarm/state/memory/{key}", "/api/swarm/nodes"):
        status, doc = target.get(path)
        assert status in (200, 404) and (status == 200 or path.endswith(key)), (path, status, str(doc)[:300])
    assert target.get("/healthz")[1]["status"] == "online"
    watch.assert_clean()


@pytest.mark.parametrize("raw", [
    '{"targetNodeId": "%(id)s", "kind": "query_resources", "ttlMs": NaN}',
    '{"targetNodeId": "%(id)s", "kind": "query_resources", "ttlMs": Infinity}',
    '{"targetNodeId": "%(id)s", "kind": "query_resources", "ttlMs": 1e400}',
    '{"targetNodeId": "%(id)s", "kind": "query_resources", "payload": {"x": NaN, "y": -Infinity}}',
    '{"targetNodeId": "%(id)s", "kind": "query_resources", "priority": {"$gt": ""}}',
    '{"targetNodeId": ["%(id)s"], "kind": "query_resources"}',
    '{"targetNodeId": "%(id)s", "kind": "query_resources", "parentDirectiveId": "%(huge)s"}',
    '{"targetNodeId": "%(huge)s", "kind": "query_resources"}',
])
def test_odd_values_in_a_dispatch_never_5xx(fresh: Node, raw: str) -> None:
    target = fresh
    watch = LogWatch(target)
    body = raw % {"id": target.node_id, "huge": "x" * 500_000}
    status, doc = http("POST", target.url + "/api/swarm/directives", raw=body.encode(), token=TOKEN, timeout=30)
    assert status in (200, 400), (status, str(doc)[:300])
    assert target.get("/api/swarm/directives?limit=1000")[0] == 200
    watch.assert_clean()


@pytest.mark.parametrize("query", [
    "/api/swarm/directives?limit=" + "9" * 5000,
    "/api/swarm/directives?status=" + "x" * 5000,
    "/api/swarm/nodes/%s/snapshots?since=" + "9" * 2000,
    "/api/swarm/nodes/%s/snapshots?since=9999-12-31T23:59:59Z",
    "/api/swarm/nodes/%s/snapshots?since=0001-01-01T00:00:00Z",
    "/api/swarm/nodes/%s/snapshots?since=2026-01-01T00:00:00%%2B99:00",
    "/api/swarm/nodes/%s/events?limit=1e3",
    "/api/swarm/state/memory/" + "k" * 300,
    "/api/swarm/state/config/apiToken",
])
def test_odd_query_values_are_4xx(target: Node, query: str) -> None:
    watch = LogWatch(target)
    path = query % target.node_id if "%s" in query else query.replace("%%", "%")
    status, doc = target.get(path)
    assert status < 500, (path[:100], status, doc)
    watch.assert_clean()
