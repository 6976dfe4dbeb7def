"""A2A 1.0 wire shapes in ProtoJSON: camelCase keys, ``ROLE_*`` and ``TASK_STATE_*`` enum names,
parts as ``{text}|{data}|{url}|{raw}`` (never a 0.3 ``kind``). Plain dicts, built and checked here."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any

from cortex_node.a2a.errors import InvalidParamsError

PROTOCOL_VERSION = "1.0"
VERSION_HEADER = "A2A-Version"
CARD_PATH = "/.well-known/agent-card.json"
LEGACY_CARD_PATH = "/.well-known/agent.json"  # the pre-1.0 name; some clients still ask for it
RPC_PATH = "/a2a"

ROLE_USER = "ROLE_USER"
ROLE_AGENT = "ROLE_AGENT"
ROLES = (ROLE_USER, ROLE_AGENT)

TASK_STATE_SUBMITTED = "TASK_STATE_SUBMITTED"
TASK_STATE_WORKING = "TASK_STATE_WORKING"
TASK_STATE_INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
TASK_STATE_AUTH_REQUIRED = "TASK_STATE_AUTH_REQUIRED"
TASK_STATE_COMPLETED = "TASK_STATE_COMPLETED"
TASK_STATE_FAILED = "TASK_STATE_FAILED"
TASK_STATE_CANCELED = "TASK_STATE_CANCELED"
TASK_STATE_REJECTED = "TASK_STATE_REJECTED"

TERMINAL_STATES = frozenset({TASK_STATE_COMPLETED, TASK_STATE_FAILED, TASK_STATE_CANCELED, TASK_STATE_REJECTED})
TASK_STATES = frozenset({TASK_STATE_SUBMITTED, TASK_STATE_WORKING, TASK_STATE_INPUT_REQUIRED,
                         TASK_STATE_AUTH_REQUIRED}) | TERMINAL_STATES

PART_CONTENT_KEYS = ("text", "data", "url", "raw")

# Protocol versions this code speaks: major 1 with any minor (spec §3.6), in Major.Minor form
# (a patch part is tolerated).
_SUPPORTED_VERSION = re.compile(r"1(\.\d+){0,2}")


def is_supported_version(version: str) -> bool:
    return bool(_SUPPORTED_VERSION.fullmatch(version.strip()))


def text_part(text: str) -> dict[str, Any]:
    return {"text": text}


def data_part(value: Any) -> dict[str, Any]:
    """A structured part; ``value`` is any JSON value (a google.protobuf.Value on the wire)."""
    return {"data": value}


def make_message(role: str, parts: list[dict[str, Any]], message_id: str | None = None,
                 context_id: str | None = None, task_id: str | None = None,
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if not parts:
        raise ValueError("a message needs at least one part")
    message: dict[str, Any] = {"messageId": message_id or str(uuid.uuid4()), "role": role, "parts": list(parts)}
    if context_id:
        message["contextId"] = context_id
    if task_id:
        message["taskId"] = task_id
    if metadata:
        message["metadata"] = metadata
    return message


def validate_message(obj: Any, where: str = "message") -> dict[str, Any]:
    """Check a ProtoJSON Message; returns it unchanged. Raises InvalidParamsError (-32602) naming
    the first field that is wrong and what is allowed there. Unknown keys are ignored."""
    if not isinstance(obj, dict):
        raise InvalidParamsError(f"{where} is required and must be an object; got {_kind(obj)}")
    message_id = obj.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise InvalidParamsError(f"{where}.messageId is required and must be a non-empty string")
    if obj.get("role") not in ROLES:
        raise InvalidParamsError(f"{where}.role must be one of {', '.join(ROLES)}; got {obj.get('role')!r}")
    parts = obj.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InvalidParamsError(f"{where}.parts is required and must be a non-empty list of parts")
    for i, part in enumerate(parts):
        _validate_part(part, f"{where}.parts[{i}]")
    for key in ("contextId", "taskId"):
        if key in obj and not isinstance(obj[key], str):
            raise InvalidParamsError(f"{where}.{key} must be a string")
    for key in ("extensions", "referenceTaskIds"):
        if key in obj and not (isinstance(obj[key], list) and all(isinstance(v, str) for v in obj[key])):
            raise InvalidParamsError(f"{where}.{key} must be a list of strings")
    if "metadata" in obj and not isinstance(obj["metadata"], dict):
        raise InvalidParamsError(f"{where}.metadata must be an object")
    return obj


def _validate_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise InvalidParamsError(f"{where} must be an object; got {_kind(part)}")
    present = [key for key in PART_CONTENT_KEYS if key in part]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        hint = " (0.3 'kind'/'file' parts are not A2A 1.0)" if "kind" in part or "file" in part else ""
        raise InvalidParamsError(
            f"{where} must have exactly one of {', '.join(PART_CONTENT_KEYS)}; found {found}{hint}")
    key = present[0]
    value = part[key]
    if key in ("text", "url") and not isinstance(value, str):
        raise InvalidParamsError(f"{where}.{key} must be a string")
    if key == "raw" and not _is_base64(value):
        raise InvalidParamsError(f"{where}.raw must be a base64 string")
    for optional in ("mediaType", "filename"):
        if optional in part and not isinstance(part[optional], str):
            raise InvalidParamsError(f"{where}.{optional} must be a string")
    if "metadata" in part and not isinstance(part["metadata"], dict):
        raise InvalidParamsError(f"{where}.metadata must be an object")


def _is_base64(value: Any) -> bool:
    """ProtoJSON bytes: standard or URL-safe alphabet, padding optional."""
    if not isinstance(value, str):
        return False
    normalized = value.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def apply_history_length(task: dict[str, Any], history_length: int | None) -> dict[str, Any]:
    """A2A §3.2.4: None keeps the whole history, 0 drops it, n keeps the last n messages."""
    history = task.get("history")
    if history_length is None or not history or len(history) <= history_length:
        return task
    trimmed = dict(task)
    if history_length == 0:
        del trimmed["history"]
    else:
        trimmed["history"] = history[-history_length:]
    return trimmed


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _kind(value: Any) -> str:
    """The JSON name of what was sent, for error messages."""
    return _JSON_KINDS.get(type(value), type(value).__name__)
