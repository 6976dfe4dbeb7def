"""The in-memory task store: lifecycle, one terminal state, subscriptions, listing, eviction."""

from __future__ import annotations

import asyncio

import pytest

from cortex_node.a2a.tasks import TaskStore
from cortex_node.a2a.wire import (
    ROLE_USER,
    TASK_STATE_CANCELED,
    TASK_STATE_COMPLETED,
    TASK_STATE_FAILED,
    TASK_STATE_SUBMITTED,
    TASK_STATE_WORKING,
    make_message,
    text_part,
)
from cortex_node.clock import ManualClock
from cortex_node.contracts import format_ts


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def store(clock):
    return TaskStore(clock)


def test_create_generates_ids_and_starts_submitted(store, clock):
    handle = store.create(history=[make_message(ROLE_USER, [text_part("hi")], message_id="m1")])
    assert handle.task_id and handle.context_id and handle.task_id != handle.context_id
    assert store.get(handle.task_id) is handle and len(store) == 1
    assert handle.state == TASK_STATE_SUBMITTED and not handle.is_terminal
    assert handle.to_proto() == {
        "id": handle.task_id, "contextId": handle.context_id,
        "status": {"state": TASK_STATE_SUBMITTED, "timestamp": format_ts(clock.now_ms())},
        # the stored message names its task and context
        "history": [{"messageId": "m1", "role": ROLE_USER, "parts": [{"text": "hi"}], "taskId": handle.task_id,
                     "contextId": handle.context_id}],
    }


def test_create_keeps_given_ids_and_rejects_a_duplicate(store):
    handle = store.create(task_id="t1", context_id="c1", metadata={"swarmDirectiveId": "dir_1"})
    assert (handle.task_id, handle.context_id) == ("t1", "c1")
    assert handle.to_proto()["metadata"] == {"swarmDirectiveId": "dir_1"}
    with pytest.raises(ValueError, match="task 't1' already exists"):
        store.create(task_id="t1")
    assert store.get("missing") is None


def test_lifecycle_builds_status_messages_and_artifacts(store, clock):
    handle = store.create(task_id="t", context_id="c")
    clock.advance(1)
    assert handle.set_working("started")
    status = handle.to_proto()["status"]
    assert status["state"] == TASK_STATE_WORKING and status["timestamp"] == format_ts(clock.now_ms())
    assert status["message"]["role"] == "ROLE_AGENT" and status["message"]["parts"] == [{"text": "started"}]
    assert (status["message"]["taskId"], status["message"]["contextId"]) == ("t", "c")

    assert handle.add_artifact([text_part("out")], name="result", artifact_id="a1")
    assert handle.finish(TASK_STATE_COMPLETED, text="done", data={"exitCode": 0})
    task = handle.to_proto()
    assert task["artifacts"] == [{"artifactId": "a1", "name": "result", "parts": [{"text": "out"}]}]
    assert task["status"]["message"]["parts"] == [{"text": "done"}, {"data": {"exitCode": 0}}]
    assert "artifacts" not in handle.to_proto(include_artifacts=False)


def test_a_task_reaches_exactly_one_terminal_state(store):
    handle = store.create()
    assert handle.finish(TASK_STATE_FAILED, text="boom")
    assert not handle.finish(TASK_STATE_COMPLETED)
    assert not handle.finish(TASK_STATE_CANCELED)
    assert not handle.set_working()
    assert not handle.add_artifact([text_part("late")])
    task = handle.to_proto()
    assert task["status"]["state"] == TASK_STATE_FAILED and "artifacts" not in task
    assert task["status"]["message"]["parts"] == [{"text": "boom"}]


@pytest.mark.parametrize("state", [TASK_STATE_WORKING, TASK_STATE_SUBMITTED, "completed", "TASK_STATE_UNSPECIFIED"])
def test_finish_needs_a_terminal_state(store, state):
    with pytest.raises(ValueError, match="finish\\(\\) needs a terminal state"):
        store.create().finish(state)


def test_an_artifact_needs_parts(store):
    with pytest.raises(ValueError, match="at least one part"):
        store.create().add_artifact([])


def test_history_length_trims_the_history(store):
    history = [make_message(ROLE_USER, [text_part(str(i))], message_id=f"m{i}") for i in range(3)]
    handle = store.create(history=history)
    assert [m["messageId"] for m in handle.to_proto(history_length=2)["history"]] == ["m1", "m2"]
    assert "history" not in handle.to_proto(history_length=0)
    assert len(handle.to_proto()["history"]) == 3


async def test_wait_terminal(store):
    handle = store.create()
    assert not await handle.wait_terminal(timeout=0)
    waiter = asyncio.create_task(handle.wait_terminal())
    handle.set_working()
    await asyncio.sleep(0)  # let the waiter run once: it must still be waiting
    assert not waiter.done()
    handle.finish(TASK_STATE_COMPLETED)
    assert await waiter


async def test_subscription_sees_every_event_then_ends(store):
    handle = store.create(task_id="t", context_id="c")
    subscription = handle.subscribe()
    handle.set_working()
    handle.add_artifact([text_part("x")], artifact_id="a")
    handle.finish(TASK_STATE_COMPLETED)
    handle.finish(TASK_STATE_FAILED)  # ignored: no event after the terminal one
    events = [event async for event in subscription]
    assert [next(iter(e)) for e in events] == ["statusUpdate", "artifactUpdate", "statusUpdate"]
    assert events[0]["statusUpdate"]["status"]["state"] == TASK_STATE_WORKING
    assert events[1] == {"artifactUpdate": {"taskId": "t", "contextId": "c",
                                            "artifact": {"artifactId": "a", "parts": [{"text": "x"}]}}}
    assert events[2]["statusUpdate"]["taskId"] == "t" and events[2]["statusUpdate"]["contextId"] == "c"
    assert events[2]["statusUpdate"]["status"]["state"] == TASK_STATE_COMPLETED
    assert [event async for event in subscription] == []  # an ended subscription stays ended


async def test_subscription_delivers_while_the_consumer_waits(store):
    handle = store.create()
    subscription = handle.subscribe()
    consumer = asyncio.create_task(anext(subscription))
    await asyncio.sleep(0)  # the consumer is now blocked on an empty subscription
    handle.set_working()
    assert (await consumer)["statusUpdate"]["status"]["state"] == TASK_STATE_WORKING


async def test_subscribing_to_a_terminal_task_ends_at_once(store):
    handle = store.create()
    handle.finish(TASK_STATE_CANCELED)
    assert [event async for event in handle.subscribe()] == []


async def test_a_closed_subscription_gets_nothing_more(store):
    handle = store.create()
    subscription = handle.subscribe()
    other = handle.subscribe()
    subscription.close()
    handle.set_working()
    handle.finish(TASK_STATE_COMPLETED)
    assert [event async for event in subscription] == []
    assert len([event async for event in other]) == 2


def test_eviction_drops_the_longest_finished_task_first(clock):
    store = TaskStore(clock, max_tasks=3)
    first, second, third = (store.create(task_id=f"t{i}") for i in range(3))
    third.finish(TASK_STATE_COMPLETED)
    first.finish(TASK_STATE_COMPLETED)  # finished after third, so third goes first
    store.create(task_id="t3")
    assert store.get("t2") is None
    assert [store.get(t) is not None for t in ("t0", "t1", "t3")] == [True, True, True]
    store.create(task_id="t4")
    assert store.get("t0") is None and store.get("t1") is second
    assert len(store) == 3


def test_eviction_drops_the_oldest_live_task_when_none_finished(clock, caplog):
    store = TaskStore(clock, max_tasks=2)
    oldest = store.create(task_id="t0")
    store.create(task_id="t1")
    store.create(task_id="t2")
    assert store.get("t0") is None and len(store) == 2
    assert "task store full" in caplog.text
    # the dropped task is still usable by whoever drives it, and does not come back
    assert oldest.finish(TASK_STATE_COMPLETED)
    assert store.get("t0") is None
    store.create(task_id="t3")
    assert store.get("t1") is None and store.get("t2") is not None


def test_store_needs_room_for_one_task(clock):
    with pytest.raises(ValueError, match="max_tasks must be at least 1"):
        TaskStore(clock, max_tasks=0)


def test_list_filters_and_orders_by_latest_status_change(store, clock):
    a = store.create(task_id="a", context_id="ctx1")
    clock.advance(1)
    b = store.create(task_id="b", context_id="ctx2")
    clock.advance(1)
    store.create(task_id="c", context_id="ctx1")
    clock.advance(1)
    a.set_working()  # a moves to the front
    b.finish(TASK_STATE_COMPLETED)  # same millisecond: the later-created task sorts first
    assert [h.task_id for h in store.list().tasks] == ["b", "a", "c"]
    assert [h.task_id for h in store.list(context_id="ctx1").tasks] == ["a", "c"]
    assert [h.task_id for h in store.list(state=TASK_STATE_SUBMITTED).tasks] == ["c"]
    assert [h.task_id for h in store.list(status_after_ms=a.status_ms).tasks] == ["b", "a"]
    page = store.list(context_id="nope")
    assert (page.tasks, page.next_page_token, page.total_size) == ([], "", 0)


def test_list_pages_through_everything_once(store, clock):
    for i in range(7):
        store.create(task_id=f"t{i}")
        clock.advance(0.001)
    seen, token, pages = [], None, 0
    while True:
        page = store.list(page_size=3, page_token=token)
        assert page.total_size == 7 + pages
        seen += [h.task_id for h in page.tasks]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        store.create(task_id=f"new{pages}")  # a task arriving mid-listing does not disturb the cursor
        clock.advance(0.001)
    assert seen == [f"t{i}" for i in range(6, -1, -1)] and pages == 3


@pytest.mark.parametrize("token", ["garbage", "1.2.3", "-1.5"])
def test_list_rejects_a_foreign_page_token(store, token):
    with pytest.raises(ValueError, match="was not issued by this store"):
        store.list(page_token=token)


def test_list_needs_a_positive_page_size(store):
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        store.list(page_size=0)
