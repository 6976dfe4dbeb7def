"""The directive envelope both ways (DESIGN §5), the legacy text form, and results from tasks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from cortex_node.contracts import DirectiveKind, DirectivePriority, SwarmDirective, to_wire
from cortex_node.swarm.envelope import EnvelopeError, directive_to_message, message_to_directive, result_from_task

NOW = 1_780_000_000_000


def directive(**kw) -> SwarmDirective:
    base = dict(directive_id="dir_abc_12345", source_node_id="node_a", target_node_id="node_b",
                kind=DirectiveKind.EXECUTE_TASK, payload={"command": ["true"]}, priority=DirectivePriority.HIGH,
                ttl_ms=5000, created_at="2026-11-26T10:00:00.000Z", expires_at="2026-11-26T10:00:05.000Z")
    base.update(kw)
    return SwarmDirective(**base)


def test_round_trip_with_swarm_metadata() -> None:
    d = directive()
    msg = directive_to_message(d)
    assert msg["contextId"] == "swarm.dir_abc_12345" and msg["role"] == "ROLE_USER"
    assert msg["metadata"] == {"swarmKind": "execute_task", "swarmPriority": "high", "swarmSourceNodeId": "node_a",
                               "swarmDirectiveId": "dir_abc_12345", "swarmTtlMs": 5000}
    assert [set(p) for p in msg["parts"]] == [{"data"}]
    assert message_to_directive(msg, target_node_id="node_b", now_ms=NOW) == d


def test_legacy_text_envelope_is_unwrapped() -> None:
    inner = {"command": ["echo", "x"]}
    for payload in (inner, json.dumps(inner)):  # older senders double-encoded it
        msg = {"messageId": "m1", "role": "ROLE_USER",
               "parts": [{"text": json.dumps({"kind": "execute_task", "payload": payload, "priority": "low",
                                              "sourceNodeId": "node_old"})}]}
        d = message_to_directive(msg, target_node_id="node_b", now_ms=NOW)
        assert d is not None and d.payload == inner and d.priority is DirectivePriority.LOW
        assert d.source_node_id == "node_old" and d.directive_id == "dir_m1"


def test_plain_text_is_not_a_directive() -> None:
    for text in ("status", "{not json", json.dumps({"kind": "dance"})):
        msg = {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": text}]}
        assert message_to_directive(msg, target_node_id="n", now_ms=NOW) is None


@pytest.mark.parametrize("data, needle", [
    ({"kind": "fly"}, "directive.kind must be one of"),
    ({"kind": "execute_task", "payload": "x"}, "directive.payload must be an object"),
    ({"kind": "execute_task", "ttlMs": 0}, "ttlMs must be from 1"),
    ({"kind": "execute_task", "priority": 3}, "directive.priority"),
])
def test_malformed_directives_name_the_field(data: dict, needle: str) -> None:
    msg = {"messageId": "m", "role": "ROLE_USER", "parts": [{"data": data}],
           "metadata": {"swarmKind": data.get("kind"), "swarmDirectiveId": "dir_x"}}
    with pytest.raises(EnvelopeError, match=needle):
        message_to_directive(msg, target_node_id="n", now_ms=NOW)


@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10), max_size=5))
def test_any_metadata_and_data_either_parse_or_raise_envelope_error(data: dict) -> None:
    msg = {"messageId": "m", "role": "ROLE_USER", "parts": [{"data": data}], "metadata": {"swarmKind": data.get("kind", "x")}}
    try:
        d = message_to_directive(msg, target_node_id="n", now_ms=NOW)
    except EnvelopeError:
        return
    assert d is not None and isinstance(d.payload, dict)


def test_result_read_from_the_artifact_or_the_task_state() -> None:
    d = directive()
    result = {"directiveId": d.directive_id, "nodeId": "node_b", "status": "completed", "output": {"x": 1},
              "error": None, "metrics": {"tokensIn": 3, "tokensOut": 4, "costUsd": 0.1, "durationMs": 9, "toolCalls": 1},
              "completedAt": "2026-11-26T10:00:01.000Z"}
    task = {"id": d.directive_id, "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": "a", "parts": [{"data": result}]}]}
    r = result_from_task(task, d, "node_b")
    assert r.status.value == "completed" and r.metrics.tokens_in == 3 and to_wire(r)["output"] == {"x": 1}
    rejected = {"id": d.directive_id, "status": {"state": "TASK_STATE_REJECTED", "message": {
        "messageId": "s", "role": "ROLE_AGENT", "parts": [{"data": {"reason": "node_draining"}}]}}}
    r = result_from_task(rejected, d, "node_b")
    assert r.status.value == "failed" and "node_draining" in r.error
