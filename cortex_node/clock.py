"""Injectable time. No logic calls time.time() directly: tests drive a ManualClock instead of
sleeping, and every node decides staleness with its own clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time, epoch milliseconds (UTC)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; ``sleep`` returns once time has been advanced."""

    def __init__(self, start_ms: int = 1_780_000_000_000) -> None:
        self._now_ms = start_ms
        self._mono = 0.0
        self._waiters: list[tuple[float, asyncio.Future]] = []

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono

    def set_ms(self, ms: int) -> None:
        self.advance((ms - self._now_ms) / 1000.0)

    def advance(self, seconds: float) -> None:
        self._now_ms += int(round(seconds * 1000))
        self._mono += seconds
        still = []
        for deadline, fut in self._waiters:
            if deadline <= self._mono:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((deadline, fut))
        self._waiters = still

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((self._mono + seconds, fut))
        await fut


class HybridLogicalClock:
    """Versions for last-writer-wins state: physical ms in the high bits, a logical counter in the
    low 16, so causality survives clock skew between nodes (a merge never goes backwards)."""

    LOGICAL_BITS = 16

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = 0

    def now(self) -> int:
        physical = self.clock.now_ms() << self.LOGICAL_BITS
        self.last = max(self.last + 1, physical)
        return self.last

    def observe(self, remote: int) -> None:
        """Move past a version seen from another node."""
        self.last = max(self.last, remote)
