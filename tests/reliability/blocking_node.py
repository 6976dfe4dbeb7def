"""``cortex-node`` with one test hook: SIGUSR1 blocks the node's event loop.

The handler runs *on* the event loop (``loop.add_signal_handler``) and calls ``time.sleep``, exactly
what a request handler doing synchronous work would do: no coroutine, timer or socket of the node
is served until it returns. The duration comes from ``CORTEX_TEST_BLOCK_S`` (default 3 s). Every
other behaviour is the real daemon's: this module only wraps ``run_node``.

Run as ``python -m tests.reliability.blocking_node <cortex-node flags>``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from cortex_node.cli import node as cli

log = logging.getLogger("cortex.test.blocker")
_real_run_node = cli.run_node


def _block() -> None:
    seconds = float(os.environ.get("CORTEX_TEST_BLOCK_S", "3"))
    log.warning("test hook: blocking the event loop for %.1f s", seconds)
    time.sleep(seconds)  # deliberately synchronous: the whole loop stands still
    log.warning("test hook: event loop released")


async def _run_node_with_blocker(settings, clock=None):  # type: ignore[no-untyped-def]
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _block)
    return await _real_run_node(settings, clock)


cli.run_node = _run_node_with_blocker

if __name__ == "__main__":
    cli.main()
