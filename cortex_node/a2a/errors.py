"""A2A 1.0 errors (spec §5.4, §9.5): one exception class per JSON-RPC code.

The server raises these and renders them with ``to_jsonrpc_error``; the client turns an error
object from a peer back into the matching class with ``error_from_jsonrpc``.
"""

from __future__ import annotations

from typing import Any

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
ERROR_DOMAIN = "a2a-protocol.org"

JSON_PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND = -32001
TASK_NOT_CANCELABLE = -32002
PUSH_NOTIFICATION_NOT_SUPPORTED = -32003
UNSUPPORTED_OPERATION = -32004
CONTENT_TYPE_NOT_SUPPORTED = -32005
INVALID_AGENT_RESPONSE = -32006
EXTENDED_AGENT_CARD_NOT_CONFIGURED = -32007
EXTENSION_SUPPORT_REQUIRED = -32008
VERSION_NOT_SUPPORTED = -32009

# The SDK server sends no ErrorInfo for these two: they are JSON-RPC's own, not A2A's.
_CODES_WITHOUT_DATA = frozenset({JSON_PARSE_ERROR, METHOD_NOT_FOUND})


class A2AError(Exception):
    """An error with a JSON-RPC code. Subclasses fix ``code``, ``reason`` and a default message;
    ``metadata`` (strings only, as in google.rpc.ErrorInfo) travels in ``error.data``."""

    code: int = INTERNAL_ERROR
    reason: str = "INTERNAL_ERROR"
    default_message: str = "Internal error"

    def __init__(self, message: str | None = None, *, metadata: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.metadata = dict(metadata or {})
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"

    def to_jsonrpc_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.code not in _CODES_WITHOUT_DATA:
            error["data"] = [{"@type": ERROR_INFO_TYPE, "reason": self.reason, "domain": ERROR_DOMAIN,
                              "metadata": self.metadata}]
        return error


class JSONParseError(A2AError):
    code = JSON_PARSE_ERROR
    reason = "PARSE_ERROR"
    default_message = "Invalid JSON payload"


class InvalidRequestError(A2AError):
    code = INVALID_REQUEST
    reason = "INVALID_REQUEST"
    default_message = "Invalid Request"


class MethodNotFoundError(A2AError):
    code = METHOD_NOT_FOUND
    reason = "METHOD_NOT_FOUND"
    default_message = "Method not found"


class InvalidParamsError(A2AError):
    code = INVALID_PARAMS
    reason = "INVALID_PARAMS"
    default_message = "Invalid params"


class InternalError(A2AError):
    code = INTERNAL_ERROR
    reason = "INTERNAL_ERROR"
    default_message = "Internal error"


class TaskNotFoundError(A2AError):
    code = TASK_NOT_FOUND
    reason = "TASK_NOT_FOUND"
    default_message = "Task not found"


class TaskNotCancelableError(A2AError):
    code = TASK_NOT_CANCELABLE
    reason = "TASK_NOT_CANCELABLE"
    default_message = "Task cannot be canceled"


class PushNotificationNotSupportedError(A2AError):
    code = PUSH_NOTIFICATION_NOT_SUPPORTED
    reason = "PUSH_NOTIFICATION_NOT_SUPPORTED"
    default_message = "Push Notification is not supported"


class UnsupportedOperationError(A2AError):
    code = UNSUPPORTED_OPERATION
    reason = "UNSUPPORTED_OPERATION"
    default_message = "This operation is not supported"


class ContentTypeNotSupportedError(A2AError):
    code = CONTENT_TYPE_NOT_SUPPORTED
    reason = "CONTENT_TYPE_NOT_SUPPORTED"
    default_message = "Incompatible content types"


class InvalidAgentResponseError(A2AError):
    code = INVALID_AGENT_RESPONSE
    reason = "INVALID_AGENT_RESPONSE"
    default_message = "Invalid agent response"


class ExtendedAgentCardNotConfiguredError(A2AError):
    code = EXTENDED_AGENT_CARD_NOT_CONFIGURED
    reason = "EXTENDED_AGENT_CARD_NOT_CONFIGURED"
    default_message = "Authenticated Extended Card is not configured"


class ExtensionSupportRequiredError(A2AError):
    code = EXTENSION_SUPPORT_REQUIRED
    reason = "EXTENSION_SUPPORT_REQUIRED"
    default_message = "Extension support required"


class VersionNotSupportedError(A2AError):
    code = VERSION_NOT_SUPPORTED
    reason = "VERSION_NOT_SUPPORTED"
    default_message = "Version not supported"


ERRORS_BY_CODE: dict[int, type[A2AError]] = {
    cls.code: cls
    for cls in (JSONParseError, InvalidRequestError, MethodNotFoundError, InvalidParamsError, InternalError,
                TaskNotFoundError, TaskNotCancelableError, PushNotificationNotSupportedError,
                UnsupportedOperationError, ContentTypeNotSupportedError, InvalidAgentResponseError,
                ExtendedAgentCardNotConfiguredError, ExtensionSupportRequiredError, VersionNotSupportedError)
}


def error_from_jsonrpc(error: Any) -> A2AError:
    """A peer's JSON-RPC ``error`` object -> the matching A2AError (base class for unknown codes)."""
    if not isinstance(error, dict):
        return InvalidAgentResponseError(f"JSON-RPC error is not an object: {error!r}")
    code = error.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        return InvalidAgentResponseError(f"JSON-RPC error has no integer code: {error!r}")
    message = error.get("message") if isinstance(error.get("message"), str) else None
    details = error.get("data") if isinstance(error.get("data"), list) else []
    info = next((d for d in details if isinstance(d, dict) and d.get("@type") == ERROR_INFO_TYPE), {})
    raw_metadata = info.get("metadata")
    metadata = {str(k): str(v) for k, v in raw_metadata.items()} if isinstance(raw_metadata, dict) else {}
    cls = ERRORS_BY_CODE.get(code)
    if cls is not None:
        return cls(message, metadata=metadata)
    # A code this version does not know: keep code and reason so callers can still tell it apart.
    unknown = A2AError(message or f"JSON-RPC error {code}", metadata=metadata)
    unknown.code = code
    unknown.reason = str(info.get("reason") or "UNKNOWN")
    return unknown
