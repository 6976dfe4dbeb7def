"""The wire vocabulary: camelCase round trips, typed parsing errors, ids, timestamps."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from cortex_node.contracts import (
    DirectiveKind,
    DirectivePriority,
    Lifecycle,
    NodeStatus,
    SwarmDirective,
    WireError,
    derive_status,
    format_ts,
    from_wire,
    new_directive_id,
    new_node_id,
    parse_ts,
    to_wire,
)


def test_directive_round_trip_in_camel_case() -> None:
    d = SwarmDirective(directive_id="dir_1", source_node_id="a", target_node_id="b", kind=DirectiveKind.EXECUTE_TASK,
                       payload={"command": ["true"]}, priority=DirectivePriority.HIGH, ttl_ms=5000)
    wire = to_wire(d)
    assert wire["directiveId"] == "dir_1" and wire["kind"] == "execute_task" and wire["ttlMs"] == 5000
    assert from_wire(SwarmDirective, wire) == d


@pytest.mark.parametrize("doc, message", [
    ({"sourceNodeId": "a", "targetNodeId": "b", "kind": "spawn_agent"}, "directiveId is required"),
    ({"directiveId": "d", "sourceNodeId": "a", "targetNodeId": "b", "kind": "fly"}, "kind must be one of spawn_agent"),
    ({"directiveId": "d", "sourceNodeId": "a", "targetNodeId": "b", "kind": "sync_state", "ttlMs": "9"},
     "ttlMs must be an integer"),
    ({"directiveId": "d", "sourceNodeId": "a", "targetNodeId": "b", "kind": "sync_state", "payload": []},
     "payload must be an object"),
])
def test_wire_errors_name_the_field(doc, message) -> None:
    with pytest.raises(WireError, match=message):
        from_wire(SwarmDirective, doc)


def test_ids_have_the_design_shape() -> None:
    assert re.fullmatch(r"node_[0-9a-z]+_[0-9a-z]{5}", new_node_id(1_780_000_000_000))
    assert re.fullmatch(r"dir_[0-9a-z]+_[0-9a-z]{5}", new_directive_id(1_780_000_000_000))


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_timestamps_round_trip_and_end_in_z(ms: int) -> None:
    text = format_ts(ms)
    assert text.endswith("Z") and parse_ts(text) == ms


def test_status_rule() -> None:
    assert derive_status(is_self=False, lifecycle=Lifecycle.DRAINING, stale=False) is NodeStatus.DRAINING
    assert derive_status(is_self=False, lifecycle=Lifecycle.DRAINING, stale=True) is NodeStatus.DISCONNECTED
    assert derive_status(is_self=False, lifecycle=Lifecycle.SEALED, stale=True) is NodeStatus.SEALED
    assert derive_status(is_self=True, lifecycle=Lifecycle.ACTIVE, stale=True) is NodeStatus.ONLINE
    assert derive_status(is_self=False, lifecycle=Lifecycle.ACTIVE, stale=False, heard=False) is NodeStatus.OFFLINE
