"""In-process fleets: several whole nodes in one process and one event loop.

Each node is what the daemon runs, minus the process: ``cortex_node.app.build_app(settings,
clock, node_id=…)`` served by ``aiohttp.test_utils.TestServer`` on 127.0.0.1 (a port chosen and
bound first, because peers learn the node's URL from ``settings.public_url``), with its own data
directory under the test's tmp_path. The app's cleanup_ctx opens the store and starts the
coordinator and the heartbeat, sweep and discovery loops, as under ``run_node``. A small
"daemon" task per node does what ``run_node`` does after a seal (REST, CLI or ``Fleet.stop``):
finish in-flight work while still answering, then close the server.

Two clocks:

* ``fleet`` (SystemClock, short intervals): for flows that run commands and agents, whose
  timeouts are on the node's clock too.
* ``manual_fleet`` (one ``FleetClock``, a ManualClock, for all nodes): time moves only when the
  test says (``advance``, ``advance_until``), so a test can state *how long in node time*
  something took: heartbeat rounds, stale_after, "at once" (no time at all). After every step
  the harness waits until the fleet has finished reacting (``settle``: every node's loops
  asleep on the clock, no heartbeat call or digest check in flight, no beat requested), so
  what a step set off is done before the next one. Use it for membership; commands and agents
  would wait for the clock too.

Every loop of a node (heartbeat, sweep, discovery) sleeps on the node's clock, so a ManualClock
drives them all.

Crash versus stop (see ``Fleet.crash``): ``stop`` is the daemon's SIGTERM (seal: lifecycle
``sealed`` written, leave notices sent, in-flight work finished, server closed). ``crash`` makes
the node vanish from the network without a word: heartbeats stop, the listening socket and every
open connection are closed (in-flight requests cut), nothing is sealed and no leave notice goes
out, so peers find out only through stale_after, as after kill -9. What it cannot simulate: the
process keeps running Python, so the node's own work is cancelled and recorded (a kill -9 leaves
rows ``pending``/``dispatched`` for the restart to resolve), its children are stopped instead of
orphaned, its SQLite store is closed cleanly (no torn or un-checkpointed write), and there is no
lock file, runtime file, signal or exit code. A stopped (SIGSTOP) or blocked node cannot be
simulated either: all nodes share one event loop, so blocking it blocks the whole fleet. Those
stay real-process tests (tests/reliability, tests/integration/test_node_daemon.py).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cortex_node.api.routes import COORDINATOR
from cortex_node.app import SEAL_DEADLINE_S, build_app
from cortex_node.clock import Clock, ManualClock, SystemClock
from cortex_node.config import NodeSettings
from cortex_node.contracts import NodeTier
from cortex_node.swarm.coordinator import Coordinator, load_or_create_node_id
from tests.support.nodes import A2A_HEADERS, LIVE, directive_rows
from tests.support.wait import wait_until

__all__ = ["Fleet", "FleetClock", "InProcNode", "fleet", "manual_fleet"]

# The names app.py gives a node's loops; a manual fleet is settled when each sleeps on the clock.
LOOPS = frozenset({"heartbeat", "sweep", "discovery"})
# Membership work that runs in tasks of its own, by the names membership.py gives them: each
# heartbeat call ("heartbeat-to-<peer id>") and the check of members learned from a digest.
SHUTDOWN_TIMEOUT_S = 1.0  # a closing server waits this long for open requests (the daemon: 5 s)
SYSTEM_INTERVALS = (0.2, 1.0)  # heartbeat, stale_after (s) on the system clock
# On the manual clock intervals cost no wall time; long ones keep the wall-clock timeout of a
# heartbeat call (min(5 s, interval)) far from anything a loaded machine could hit.
MANUAL_INTERVALS = (5.0, 15.0)


# --- time ---------------------------------------------------------------------------------------
@dataclass
class _Timer:
    deadline: float
    future: asyncio.Future
    node: str | None
    task: str | None


class FleetClock(ManualClock):
    """The fleet's ManualClock: time moves only with ``advance``. On top of ManualClock it knows
    every pending sleep (which node, which task), so the harness can tell when each node's loops
    are asleep again; nodes get a ``NodeClock`` view of it (same time, sleeps tagged)."""

    def __init__(self, start_ms: int = 1_780_000_000_000) -> None:
        super().__init__(start_ms)
        self._timers: list[_Timer] = []

    def for_node(self, name: str) -> "NodeClock":
        return NodeClock(self, name)

    def timer(self, seconds: float, node: str | None = None) -> asyncio.Future:
        """A future that completes once the clock has moved ``seconds`` past now; registered at
        once (not when a task first runs), so no advance can slip past it."""
        task = asyncio.current_task()
        fut = asyncio.get_running_loop().create_future()
        self._timers.append(_Timer(self.monotonic() + max(0.0, seconds), fut, node, task.get_name() if task else None))
        return fut

    async def sleep(self, seconds: float) -> None:
        await self.timer(seconds)

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        now = self.monotonic() + 1e-9  # float steps must not leave a timer due "now" asleep
        due = [t for t in self._timers if t.deadline <= now]
        self._timers = [t for t in self._timers if t.deadline > now and not t.future.done()]
        for t in due:
            if not t.future.done():
                t.future.set_result(None)

    def asleep(self, node: str) -> set[str]:
        """The names of ``node``'s tasks that are waiting for the clock."""
        return {t.task for t in self._timers if t.node == node and not t.future.done() and t.task}


class NodeClock:
    """One node's view of the FleetClock: the same time; its sleeps are tagged with the node."""

    def __init__(self, clock: FleetClock, node: str) -> None:
        self._clock = clock
        self.node = node

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def timer(self, seconds: float) -> asyncio.Future:
        return self._clock.timer(seconds, self.node)

    async def sleep(self, seconds: float) -> None:
        await self.timer(seconds)


# --- one node -----------------------------------------------------------------------------------
@dataclass(eq=False)
class InProcNode:
    """One in-process node: its URL, id, settings and an async REST/JSON-RPC client."""

    name: str
    settings: NodeSettings
    clock: Clock
    node_id: str
    session: aiohttp.ClientSession
    app: web.Application | None = None
    server: TestServer | None = None
    state: str = "new"  # running, stopped (sealed, like the daemon's exit 0) or crashed
    stop_error: BaseException | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _daemon: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return self.settings.public_url

    @property
    def a2a_url(self) -> str:
        return self.url + "/a2a"

    @property
    def token(self) -> str | None:
        return self.settings.token

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def coordinator(self) -> Coordinator:
        assert self.app is not None, f"node {self.name} has not been started"
        return self.app[COORDINATOR]

    @property
    def running(self) -> bool:
        return self.state == "running"

    # --- REST and JSON-RPC ----------------------------------------------------------------------
    async def request(self, method: str, path: str, body: Any = None, *, token: str | None = ...,
                      raw: bytes | None = None, headers: dict[str, str] | None = None,
                      timeout: float = 15.0) -> tuple[int, Any]:
        """(status, JSON body, or text when it is not JSON, or None when empty)."""
        hdrs = dict(headers or {})
        tok = self.token if token is ... else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, data=data, headers=hdrs,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            payload, status = await resp.read(), resp.status
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    async def get(self, path: str, token: str | None = ...) -> tuple[int, Any]:
        return await self.request("GET", path, token=token)

    async def post(self, path: str, body: Any = None, token: str | None = ...) -> tuple[int, Any]:
        return await self.request("POST", path, body if body is not None else {}, token=token)

    async def put(self, path: str, body: Any = None, token: str | None = ...) -> tuple[int, Any]:
        return await self.request("PUT", path, body if body is not None else {}, token=token)

    async def rpc(self, method: str, params: Any = None, *, rpc_id: Any = 1, token: str | None = ...) -> tuple[int, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            body["params"] = params
        return await self.request("POST", "/a2a", body, token=token, headers=A2A_HEADERS)

    # --- the fleet as this node sees it ---------------------------------------------------------
    async def nodes(self) -> list[dict[str, Any]]:
        status, doc = await self.get("/api/swarm/nodes")
        assert status == 200, (status, doc)
        return doc["nodes"]

    async def statuses(self) -> dict[str, str]:
        """node id -> status word, as GET /api/swarm/nodes shows it."""
        return {n["id"]: n["status"] for n in await self.nodes()}

    async def status_of(self, other: "InProcNode | str") -> str | None:
        return (await self.statuses()).get(other if isinstance(other, str) else other.node_id)

    async def row_of(self, other: "InProcNode | str") -> dict[str, Any]:
        """Another node's row as this node keeps it (lastHeartbeat is this node's receipt time)."""
        node_id = other if isinstance(other, str) else other.node_id
        (row,) = [n for n in await self.nodes() if n["id"] == node_id]
        return row

    async def events_about(self, other: "InProcNode | str", limit: int = 200) -> list[dict[str, Any]]:
        """A node's history as this node recorded it, newest first."""
        node_id = other if isinstance(other, str) else other.node_id
        status, doc = await self.get(f"/api/swarm/nodes/{node_id}/events?limit={limit}")
        assert status == 200, (status, doc)
        return doc["events"]

    # --- its database (read-only, a second connection like any tool) -----------------------------
    def directive_rows(self, directive_id: str, role: str | None = None) -> list[dict[str, Any]]:
        return directive_rows(self.data_dir, directive_id, role)

    def directive_row(self, directive_id: str, role: str) -> dict[str, Any]:
        """One side's row of a directive ({} while there is none)."""
        rows = self.directive_rows(directive_id, role)
        return rows[0] if rows else {}

    async def wait_stopped(self, timeout: float = 30.0) -> None:
        """Until the node has stopped (after a seal: as the daemon would have exited)."""
        await asyncio.wait_for(self._stopped.wait(), timeout)


# --- the fleet ----------------------------------------------------------------------------------
class Fleet:
    """Nodes of one test, all in this process and event loop, on one clock."""

    def __init__(self, base: Path, clock: SystemClock | FleetClock | None = None) -> None:
        self.base = base
        self.clock: SystemClock | FleetClock = clock or SystemClock()
        self.nodes: dict[str, InProcNode] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def manual(self) -> bool:
        return isinstance(self.clock, FleetClock)

    def __getitem__(self, name: str) -> InProcNode:
        return self.nodes[name]

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # no keep-alive: a connection pooled to a node that then crashed must not be reused
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self._session

    # --- starting -------------------------------------------------------------------------------
    async def start(self, name: str, *, seeds: Iterable[InProcNode | str] = (), tier: str = "root",
                    token: str | None = None, heartbeat_s: float | None = None, stale_s: float | None = None,
                    **settings: Any) -> InProcNode:
        """Start one node named ``name`` (data in ``base/name``); ``seeds`` are nodes or URLs;
        ``settings`` are further NodeSettings fields (group, labels, rate_limit_per_s…)."""
        assert name not in self.nodes, f"a node named {name} exists already"
        default_hb, default_stale = MANUAL_INTERVALS if self.manual else SYSTEM_INTERVALS
        heartbeat_s = default_hb if heartbeat_s is None else heartbeat_s
        stale_s = default_stale if stale_s is None else stale_s
        assert stale_s > heartbeat_s, "stale_after must be longer than the heartbeat interval"
        data_dir = self.base / name
        data_dir.mkdir(parents=True, exist_ok=True)
        sock = _listening_socket(0)
        try:
            node_settings = NodeSettings(
                name=name, host="127.0.0.1", port=sock.getsockname()[1], data_dir=data_dir, tier=NodeTier(tier),
                seed_nodes=tuple(s.url if isinstance(s, InProcNode) else s for s in seeds), token=token,
                heartbeat_interval_ms=round(heartbeat_s * 1000), stale_after_ms=round(stale_s * 1000), **settings)
            clock = self.clock.for_node(name) if isinstance(self.clock, FleetClock) else self.clock
            node = InProcNode(name=name, settings=node_settings, clock=clock, session=self.session,
                              node_id=load_or_create_node_id(data_dir, clock.now_ms()))
        except BaseException:
            sock.close()
            raise
        self.nodes[name] = node
        await self._serve(node, sock)
        return node

    async def start_many(self, count: int, *, prefix: str = "n", **options: Any) -> list[InProcNode]:
        """``count`` nodes named prefix1…; each after the first has the first as its seed unless
        ``seeds`` is given."""
        first = await self.start(f"{prefix}1", **options)
        options.setdefault("seeds", [first])
        return [first] + [await self.start(f"{prefix}{i}", **options) for i in range(2, count + 1)]

    async def restart(self, name: str) -> InProcNode:
        """Start a stopped or crashed node again: same settings, port, data directory and id; a
        new coordinator (new boot id, counters from zero), as a restarted daemon."""
        node = self.nodes[name]
        assert not node.running, f"{name} is running; stop or crash it first"
        await self._serve(node, _listening_socket(node.port))
        return node

    async def _serve(self, node: InProcNode, sock: socket.socket) -> None:
        try:
            app = build_app(node.settings, node.clock, node_id=node.node_id)
            server = TestServer(app, host="127.0.0.1", port=node.port, socket_factory=lambda *_: sock)
            await server.start_server(shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)  # the node starts here
        except BaseException:
            sock.close()
            raise
        node.app, node.server, node.state, node.stop_error = app, server, "running", None
        node._stopped = asyncio.Event()
        node._daemon = asyncio.create_task(self._daemon(node), name=f"inproc-daemon-{node.name}")
        if self.manual:
            await self.settle()

    async def _daemon(self, node: InProcNode) -> None:
        """What run_node does once the node is sealed: in-flight work finishes while the server
        still answers, then the server closes (the daemon would exit 0 here)."""
        c = node.coordinator
        await c.shutdown_requested.wait()
        try:
            await c.stop(SEAL_DEADLINE_S)
            assert node.server is not None
            await node.server.close()
        except BaseException as exc:
            node.stop_error = exc
            raise
        finally:
            node.state = "stopped"
            node._stopped.set()

    # --- stopping -------------------------------------------------------------------------------
    async def stop(self, name: str, reason: str = "stopped by the test") -> None:
        """A clean stop, as SIGTERM to the daemon: seal (lifecycle sealed, leave notices, no more
        beats), in-flight work finished, server closed."""
        node = self.nodes[name]
        if node.running:
            await node.coordinator.seal(reason)
            await node.wait_stopped()

    async def crash(self, name: str) -> None:
        """The node vanishes without a word: no more heartbeats, its socket and every open
        connection closed at once, no seal, no leave notice. (What this cannot simulate: see the
        module docstring.)"""
        node = self.nodes[name]
        if not node.running:
            return
        node.state = "crashed"
        assert node._daemon is not None and node.server is not None and node.server.runner is not None
        node._daemon.cancel()
        c = node.coordinator
        c.heartbeat_stopped = True  # no beat after this one (a beat's calls under way are cut below)
        runner = node.server.runner
        for site in list(runner.sites):
            await site.stop()  # no new connections: peers get "connection refused"
        if runner.server is not None:
            # open connections (peers' requests under way, idle keep-alives) cut; 0 would mean
            # "no timeout" to aiohttp
            await runner.server.shutdown(0.01)
        await c.stop(0)  # own heartbeat calls, sends and work cancelled; never a leave notice
        await node.server.close()  # the loops and the store (the rest of the app's cleanup)
        node._stopped.set()

    async def close(self) -> None:
        """End every node still running (no seal, quickly) and the client session."""
        for node in self.nodes.values():
            if node._daemon is not None:
                node._daemon.cancel()
            if node.server is not None and not node.server.closed:
                node.state = "stopped"
                try:
                    await node.coordinator.stop(0)
                finally:
                    await node.server.close()
        if self._session is not None:
            await self._session.close()

    # --- the fleet as a whole -------------------------------------------------------------------
    def running(self) -> list[InProcNode]:
        return [n for n in self.nodes.values() if n.running]

    async def converged(self, nodes: Iterable[InProcNode] | None = None) -> bool:
        """Every one of ``nodes`` (default: the running ones) knows exactly these nodes and sees
        each of them live (online or connected)."""
        nodes = list(self.running() if nodes is None else nodes)
        ids = {n.node_id for n in nodes}
        for n in nodes:
            seen = await n.statuses()
            if set(seen) != ids or any(seen[i] not in LIVE for i in ids):
                return False
        return True

    # --- node time (manual fleets) --------------------------------------------------------------
    @property
    def tick(self) -> float:
        """The largest step ``advance`` takes: no longer than a sweep interval (stale_after/10),
        and shorter than what a node takes for a stalled event loop (min(1 s, interval)), which
        would grant every peer a fresh grace period."""
        steps = [1.0]
        for n in self.running():
            s = n.settings
            steps += [s.heartbeat_interval_ms / 1000, max(0.05, min(5.0, s.stale_after_ms / 10_000))]
        return min(steps) * 0.999

    def now_s(self) -> float:
        """The fleet clock's monotonic time (node seconds)."""
        return self.clock.monotonic()

    def _settled(self) -> bool:
        assert isinstance(self.clock, FleetClock)
        for node in self.running():
            c = node.coordinator
            if c.shutdown_requested.is_set():
                continue  # a sealed node beats no more; the daemon task is ending it
            if c.membership_busy() or not LOOPS <= self.clock.asleep(node.name):
                return False
        return True

    async def settle(self, timeout: float = 15.0) -> None:
        """Until the fleet has finished reacting to the last step: every node's loops asleep on
        the clock, no heartbeat call (or check of a digest's members) in flight, no beat
        requested (manual fleets only)."""
        assert self.manual, "settle needs a manual fleet (the manual_fleet fixture)"
        await wait_until(self._settled, timeout=timeout, step=0.002, what="the fleet to settle")

    async def advance(self, seconds: float, *, step: float | None = None) -> None:
        """Move node time forward by ``seconds`` in steps of at most ``step`` (default ``tick``),
        settling after each."""
        assert isinstance(self.clock, FleetClock), "advance needs a manual fleet (the manual_fleet fixture)"
        step = step or self.tick
        await self.settle()
        left = seconds
        while left > 1e-9:
            d = min(step, left)
            self.clock.advance(d)
            left -= d
            await self.settle()

    async def advance_until(self, condition: Callable[[], Any | Awaitable[Any]], *, within: float,
                            step: float | None = None, what: str = "condition") -> float:
        """Advance step by step (settling after each) until ``condition`` (plain or async) holds;
        return the node seconds that took (0.0 when it held at once). An AssertionError when it
        still does not hold after ``within`` node seconds."""
        assert isinstance(self.clock, FleetClock), "advance_until needs a manual fleet (the manual_fleet fixture)"
        step = step or self.tick
        await self.settle()
        start = self.clock.monotonic()
        last_error: Exception | None = None
        while True:
            try:
                value = condition()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return self.clock.monotonic() - start
            except Exception as exc:  # what we wait for may not exist yet
                last_error = exc
            elapsed = self.clock.monotonic() - start
            if elapsed >= within - 1e-9:
                raise AssertionError(f"{what}: not within {within:g} s of node time"
                                     + (f" (last error: {last_error!r})" if last_error else ""))
            self.clock.advance(min(step, within - elapsed))
            await self.settle()


def _listening_socket(port: int) -> socket.socket:
    """Bound to 127.0.0.1 and listening before the node starts: a peer that calls during the
    node's start waits in the backlog instead of being refused, and no other test can take the
    port between choosing and serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


# --- fixtures (registered in tests/conftest.py) -------------------------------------------------
@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """In-process nodes on the system clock (short intervals: 0.2 s heartbeat, 1 s stale)."""
    f = Fleet(tmp_path / "fleet")
    try:
        yield f
    finally:
        await f.close()


@pytest.fixture
async def manual_fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """In-process nodes on one manual clock: node time moves only with advance/advance_until."""
    f = Fleet(tmp_path / "fleet", clock=FleetClock())
    try:
        yield f
    finally:
        await f.close()
