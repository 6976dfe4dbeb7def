"""Condition waits, the only kind the tests use: poll until something is true, fail with what was
awaited (and the last error) after a timeout. Never a fixed sleep.

``wait_until`` is the async one, for tests whose event loop must keep running while they wait
(in-process nodes, the Textual pilot): it has the signature and behaviour of
``tests/tui/conftest.py``'s ``wait_until`` and can replace it. ``wait_for`` is the blocking one,
for tests that talk to real node processes.

The timeouts are wall-clock bounds on a failure, never a measurement: a test that must show how
*fast* something happened measures it in the node's own terms (see ``tests/support/inproc.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable


def _timed_out(what: str, timeout: float, last_error: Exception | None) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what}"
                          + (f" (last error: {last_error!r})" if last_error else ""))


async def wait_until(condition: Callable[[], Any | Awaitable[Any]], *, timeout: float = 30.0,
                     what: str = "condition", step: float = 0.05) -> Any:
    """Poll ``condition`` (a plain or async callable) until it returns something truthy and
    return that. An exception from it means "not yet" (what is awaited may not exist yet); after
    ``timeout`` seconds an AssertionError names ``what`` and the last exception."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:  # the thing waited for may not exist yet
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last_error)
        await asyncio.sleep(step)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """The blocking twin of ``wait_until`` (for real node processes): same rules."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing waited for may not exist yet
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last_error)
        time.sleep(interval)
