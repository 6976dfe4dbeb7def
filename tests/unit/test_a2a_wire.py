"""A2A wire shapes and error envelopes: message validation, builders, history trimming, error codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_node.a2a import errors
from cortex_node.a2a.errors import (
    A2AError,
    InvalidParamsError,
    TaskNotFoundError,
    VersionNotSupportedError,
    error_from_jsonrpc,
)
from cortex_node.a2a.wire import (
    ROLE_AGENT,
    ROLE_USER,
    TASK_STATES,
    TERMINAL_STATES,
    apply_history_length,
    data_part,
    is_supported_version,
    make_message,
    text_part,
    validate_message,
)


def good_message(**changes):
    message = {"messageId": "m-1", "role": ROLE_USER, "parts": [{"text": "hi"}]}
    message.update(changes)
    return message


def test_valid_message_with_every_part_kind_is_returned_unchanged():
    message = good_message(parts=[{"text": "hi"}, {"data": {"k": [1, None]}}, {"url": "https://x/y", "mediaType": "a/"},
                                  {"raw": "aGVsbG8", "filename": "h.txt"}, {"raw": "-_-_"}, {"data": None}],
                           contextId="c", taskId="t", metadata={"a": 1}, extensions=["urn:x"], referenceTaskIds=["t0"],
                           unknownFutureField=True)
    assert validate_message(message) is message


@pytest.mark.parametrize("message, field", [
    (None, "message is required and must be an object; got null"),
    ([], "message is required and must be an object; got an array"),
    (good_message(messageId=None), "message.messageId is required"),
    (good_message(messageId=""), "message.messageId is required"),
    (good_message(messageId=5), "message.messageId is required"),
    (good_message(role="user"), "message.role must be one of ROLE_USER, ROLE_AGENT; got 'user'"),
    (good_message(role="ROLE_UNSPECIFIED"), "message.role must be one of"),
    (good_message(parts=[]), "message.parts is required and must be a non-empty list"),
    (good_message(parts={"text": "x"}), "message.parts is required and must be a non-empty list"),
    (good_message(parts=["hi"]), "message.parts[0] must be an object; got a string"),
    (good_message(parts=[{}]), "message.parts[0] must have exactly one of text, data, url, raw; found none"),
    (good_message(parts=[{"text": "a", "data": {}}]), "message.parts[0] must have exactly one of text, data, url, raw; "
                                                      "found text, data"),
    (good_message(parts=[{"kind": "text", "text": "a"}, {"kind": "text"}]),
     "message.parts[1] must have exactly one of text, data, url, raw; found none (0.3 'kind'/'file' parts"),
    (good_message(parts=[{"text": 5}]), "message.parts[0].text must be a string"),
    (good_message(parts=[{"url": ["x"]}]), "message.parts[0].url must be a string"),
    (good_message(parts=[{"raw": "not base64!"}]), "message.parts[0].raw must be a base64 string"),
    (good_message(parts=[{"text": "a", "mediaType": 1}]), "message.parts[0].mediaType must be a string"),
    (good_message(parts=[{"text": "a", "metadata": []}]), "message.parts[0].metadata must be an object"),
    (good_message(contextId=1), "message.contextId must be a string"),
    (good_message(taskId=None), "message.taskId must be a string"),
    (good_message(referenceTaskIds=[1]), "message.referenceTaskIds must be a list of strings"),
    (good_message(metadata="x"), "message.metadata must be an object"),
])
def test_invalid_message_names_the_field(message, field):
    with pytest.raises(InvalidParamsError) as caught:
        validate_message(message)
    assert caught.value.code == -32602
    assert field in caught.value.message


def test_validation_path_prefix_is_the_callers():
    with pytest.raises(InvalidParamsError, match=r"^params\.message\.parts\[0\]"):
        validate_message(good_message(parts=[{}]), "params.message")


def test_make_message_builds_protojson():
    message = make_message(ROLE_AGENT, [text_part("done"), data_part({"n": 1})], context_id="c", task_id="t",
                           metadata={"k": "v"})
    assert message["role"] == "ROLE_AGENT"
    assert message["parts"] == [{"text": "done"}, {"data": {"n": 1}}]
    assert (message["contextId"], message["taskId"], message["metadata"]) == ("c", "t", {"k": "v"})
    assert isinstance(message["messageId"], str) and message["messageId"]
    assert validate_message(message) is message
    assert "kind" not in message


def test_make_message_optional_fields_are_left_out_and_ids_are_unique():
    first, second = (make_message(ROLE_USER, [text_part("x")]) for _ in range(2))
    assert set(first) == {"messageId", "role", "parts"}
    assert first["messageId"] != second["messageId"]
    assert make_message(ROLE_USER, [text_part("x")], message_id="fixed")["messageId"] == "fixed"


@pytest.mark.parametrize("role, parts, complaint", [
    ("user", [text_part("x")], "role must be one of ROLE_USER, ROLE_AGENT"),
    (ROLE_USER, [], "at least one part"),
])
def test_make_message_rejects_bad_input(role, parts, complaint):
    with pytest.raises(ValueError, match=complaint):
        make_message(role, parts)


def test_states_are_protojson_enum_names():
    assert {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED",
                               "TASK_STATE_REJECTED"} == TERMINAL_STATES
    assert TERMINAL_STATES < TASK_STATES
    assert all(s.startswith("TASK_STATE_") and s.isupper() and "UNSPECIFIED" not in s for s in TASK_STATES)


@pytest.mark.parametrize("version, supported", [
    ("1.0", True), ("1.1", True), ("1", True), ("1.0.2", True), (" 1.0 ", True),
    ("0.3", False), ("0.3.0", False), ("2.0", False), ("10.0", False), ("", False), ("1.x", False), ("v1.0", False),
])
def test_supported_versions_are_major_1(version, supported):
    assert is_supported_version(version) is supported


@given(history_size=st.integers(0, 6), history_length=st.one_of(st.none(), st.integers(0, 8)))
def test_apply_history_length_keeps_the_newest_messages(history_size, history_length):
    history = [good_message(messageId=f"m{i}") for i in range(history_size)]
    task = {"id": "t", "status": {"state": "TASK_STATE_WORKING"}}
    if history:
        task["history"] = history
    trimmed = apply_history_length(task, history_length)
    expected = history if history_length is None else history[len(history) - min(history_length, len(history)):]
    assert trimmed.get("history", []) == expected
    assert task.get("history", []) == history  # the input is not changed


# --- errors --------------------------------------------------------------------------------------
EXPECTED_CODES = {
    "JSONParseError": (-32700, None), "InvalidRequestError": (-32600, "INVALID_REQUEST"),
    "MethodNotFoundError": (-32601, None), "InvalidParamsError": (-32602, "INVALID_PARAMS"),
    "InternalError": (-32603, "INTERNAL_ERROR"), "TaskNotFoundError": (-32001, "TASK_NOT_FOUND"),
    "TaskNotCancelableError": (-32002, "TASK_NOT_CANCELABLE"),
    "PushNotificationNotSupportedError": (-32003, "PUSH_NOTIFICATION_NOT_SUPPORTED"),
    "UnsupportedOperationError": (-32004, "UNSUPPORTED_OPERATION"),
    "ContentTypeNotSupportedError": (-32005, "CONTENT_TYPE_NOT_SUPPORTED"),
    "InvalidAgentResponseError": (-32006, "INVALID_AGENT_RESPONSE"),
    "ExtendedAgentCardNotConfiguredError": (-32007, "EXTENDED_AGENT_CARD_NOT_CONFIGURED"),
    "ExtensionSupportRequiredError": (-32008, "EXTENSION_SUPPORT_REQUIRED"),
    "VersionNotSupportedError": (-32009, "VERSION_NOT_SUPPORTED"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CODES))
def test_error_envelope_matches_the_sdk(name):
    code, reason = EXPECTED_CODES[name]
    error = getattr(errors, name)()
    body = error.to_jsonrpc_error()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    if reason is None:  # JSON-RPC's own codes carry no ErrorInfo, as with the SDK server
        assert "data" not in body
    else:
        assert body["data"] == [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                                 "domain": "a2a-protocol.org", "metadata": {}}]
    assert errors.ERRORS_BY_CODE[code] is type(error)


def test_error_round_trips_through_jsonrpc():
    sent = VersionNotSupportedError("A2A version '0.3' is not supported", metadata={"expected": "1.0"})
    received = error_from_jsonrpc(sent.to_jsonrpc_error())
    assert type(received) is VersionNotSupportedError
    assert (received.code, received.message, received.metadata) == (-32009, sent.message, {"expected": "1.0"})
    assert str(received) == sent.message


def test_error_from_jsonrpc_without_message_uses_the_default():
    received = error_from_jsonrpc({"code": -32001})
    assert isinstance(received, TaskNotFoundError) and received.message == "Task not found"


def test_error_from_jsonrpc_keeps_an_unknown_code_and_reason():
    received = error_from_jsonrpc({"code": -31999, "message": "new", "data": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SOMETHING_NEW", "metadata": {"n": 1}}]})
    assert type(received) is A2AError
    assert (received.code, received.reason, received.message, received.metadata) == (-31999, "SOMETHING_NEW", "new",
                                                                                      {"n": "1"})


@pytest.mark.parametrize("error", ["boom", {"message": "no code"}, {"code": True}, {"code": "-32001"}])
def test_error_from_jsonrpc_flags_a_malformed_error(error):
    assert error_from_jsonrpc(error).code == -32006


def test_error_from_jsonrpc_tolerates_odd_data():
    for data in (5, {"@type": "x"}, [1, "x", {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "metadata": 3}]):
        received = error_from_jsonrpc({"code": -32602, "message": "bad", "data": data})
        assert isinstance(received, InvalidParamsError) and received.metadata == {}
