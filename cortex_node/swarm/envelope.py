"""Directives as A2A messages, both ways, and their results as A2A tasks.

A directive travels as an A2A message (DESIGN §5): ``metadata`` carries ``swarmKind``,
``swarmPriority``, ``swarmSourceNodeId``, ``swarmDirectiveId``, ``swarmTtlMs``; ``contextId`` is
``swarm.<directiveId>``; the directive itself is a ``data`` part. The older CortexPrism form, a
``text`` part holding ``{kind, payload, priority, sourceNodeId}``, is accepted on receipt.
"""

from __future__ import annotations

import json
from typing import Any

from cortex_node.a2a.wire import data_part, make_message
from cortex_node.contracts import (
    DEFAULT_TTL_MS,
    MAX_JSON_DEPTH,
    MAX_TTL_MS,
    DirectiveKind,
    DirectiveResultStatus,
    SwarmDirective,
    SwarmDirectiveResult,
    WireError,
    format_ts,
    from_wire,
    json_depth_exceeds,
    parse_ts,
    to_wire,
)

RESULT_ARTIFACT = "directive-result"


_METADATA_KEYS = (("kind", "swarmKind"), ("priority", "swarmPriority"), ("sourceNodeId", "swarmSourceNodeId"),
                  ("directiveId", "swarmDirectiveId"), ("ttlMs", "swarmTtlMs"))


_KINDS = frozenset(k.value for k in DirectiveKind)


class EnvelopeError(ValueError):
    """A message that claims to be a directive but is malformed; the text says which field."""


def directive_to_message(d: SwarmDirective) -> dict[str, Any]:
    return make_message(
        "ROLE_USER", [data_part(to_wire(d))], message_id=f"msg.{d.directive_id}", context_id=f"swarm.{d.directive_id}",
        metadata={
            "swarmKind": d.kind.value, "swarmPriority": d.priority.value, "swarmSourceNodeId": d.source_node_id,
            "swarmDirectiveId": d.directive_id, "swarmTtlMs": d.ttl_ms,
        },
    )


def message_to_directive(message: dict[str, Any], *, target_node_id: str, now_ms: int) -> SwarmDirective | None:
    """The directive a message carries, or None for an ordinary message (plain text for the
    swarm-ops skill). Raises EnvelopeError for a malformed directive."""
    meta = message.get("metadata") or {}
    parts = message.get("parts") or []
    doc: dict[str, Any] | None = None
    if isinstance(meta, dict) and "swarmKind" in meta:
        doc = next((p["data"] for p in parts if isinstance(p.get("data"), dict)), None)
        doc = dict(doc or {})
        for key, meta_key in _METADATA_KEYS:
            if meta.get(meta_key) is not None:
                doc.setdefault(key, meta[meta_key])
    else:
        doc = _legacy_envelope(parts)
        if doc is None:
            return None
    if not doc.get("directiveId"):
        # the legacy form has no id: the message id names it, so a resend is still a replay
        doc["directiveId"] = f"dir_{message.get('messageId', '')}".rstrip("_")
    doc.setdefault("targetNodeId", target_node_id)
    doc.setdefault("sourceNodeId", "unknown")
    doc.setdefault("priority", "normal")
    doc.setdefault("ttlMs", DEFAULT_TTL_MS)
    doc.setdefault("createdAt", format_ts(now_ms))
    try:
        d = from_wire(SwarmDirective, doc, "directive")
    except WireError as exc:
        raise EnvelopeError(str(exc)) from None
    if json_depth_exceeds(d.payload):
        raise EnvelopeError(f"directive.payload nests deeper than {MAX_JSON_DEPTH} levels")
    for name, value in (("createdAt", d.created_at), ("expiresAt", d.expires_at)):
        if value is not None:
            try:
                parse_ts(value)
            except (ValueError, OverflowError):
                raise EnvelopeError(f"directive.{name} must be an ISO 8601 timestamp such as "
                                    f"2026-11-26T10:00:00Z; got {value[:40]!r}") from None
    if not 1 <= d.ttl_ms <= MAX_TTL_MS:
        raise EnvelopeError(f"directive.ttlMs must be from 1 to {MAX_TTL_MS}; got {d.ttl_ms}")
    if not d.directive_id or len(d.directive_id) > 128:
        raise EnvelopeError("directive.directiveId must be a non-empty string of at most 128 characters")
    return d


def _legacy_envelope(parts: list[Any]) -> dict[str, Any] | None:
    for part in parts:
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str) or not text.lstrip().startswith("{"):
            continue
        try:
            env = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not isinstance(env, dict) or not isinstance(env.get("kind"), str) or env["kind"] not in _KINDS:
            continue
        payload = env.get("payload", {})
        if isinstance(payload, str):  # older senders double-encoded the payload
            try:
                payload = json.loads(payload)
            except (ValueError, RecursionError):
                raise EnvelopeError("directive.payload is a string that is not JSON (or nests too deep)") from None
        doc = {"kind": env["kind"], "payload": payload, "priority": env.get("priority", "normal"),
               "sourceNodeId": env.get("sourceNodeId")}
        for key in ("directiveId", "ttlMs", "parentDirectiveId"):
            if key in env:
                doc[key] = env[key]
        return doc
    return None


def result_from_task(task: dict[str, Any], directive: SwarmDirective, target_node_id: str) -> SwarmDirectiveResult:
    """Read the directive result the target put in the task's artifact; a REJECTED task or one
    without a result becomes ``failed`` with the reason."""
    for artifact in task.get("artifacts") or []:
        for part in artifact.get("parts") or []:
            data = part.get("data")
            if isinstance(data, dict) and data.get("directiveId") == directive.directive_id and "status" in data:
                try:
                    return from_wire(SwarmDirectiveResult, data, "result")
                except WireError as exc:
                    return failed_result(directive, target_node_id, f"the target sent a malformed result: {exc}")
    status = task.get("status") or {}
    state = status.get("state", "")
    reason = _status_text(status) or state
    if state == "TASK_STATE_REJECTED":
        return failed_result(directive, target_node_id, f"rejected by the target: {reason}")
    if state == "TASK_STATE_CANCELED":
        return SwarmDirectiveResult(directive.directive_id, target_node_id, DirectiveResultStatus.CANCELLED,
                                    error=reason)
    return failed_result(directive, target_node_id, f"the target ended the task ({state}) without a result: {reason}")


def _status_text(status: dict[str, Any]) -> str:
    msg = status.get("message") or {}
    texts = [p["text"] for p in msg.get("parts") or [] if isinstance(p.get("text"), str)]
    datas = [p["data"] for p in msg.get("parts") or [] if isinstance(p.get("data"), dict)]
    reason = next((d.get("reason") for d in datas if d.get("reason")), None)
    return " ".join(x for x in [reason, *texts] if x)


def failed_result(d: SwarmDirective, node_id: str, error: str) -> SwarmDirectiveResult:
    return SwarmDirectiveResult(d.directive_id, node_id, DirectiveResultStatus.FAILED, error=error)
