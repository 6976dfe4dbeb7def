"""Composes one node: store, coordinator, aiohttp Application and its background tasks.

``build_app`` makes a whole node as one aiohttp Application: its ``cleanup_ctx`` opens the store,
starts the coordinator and the loops (discovery, heartbeat, sweep) when the app starts, and stops
them when it is cleaned up, so a node runs the same under ``run_node`` (the daemon) and on a
test server in-process. ``run_node`` is the daemon's whole life: lock the data directory, bind,
serve until a seal (REST, CLI or SIGTERM/SIGINT) ends it with 0.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import fcntl
import json
import logging
import os
import random
import resource
import signal
import socket
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator

from aiohttp import web

from cortex_node.api.http import (
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
    ConnectionGuard,
    GuardedSockSite,
    HostPolicy,
    RateLimiter,
    body_deadline_middleware,
    connection_tracking_middleware,
    error_middleware,
    make_auth_middleware,
    make_browser_guard_middleware,
    make_rate_limit_middleware,
)
from cortex_node.api.routes import COORDINATOR, routes
from cortex_node.clock import Clock, SystemClock
from cortex_node.config import NodeSettings, check_bind_policy, load_or_create_operator_token, operator_token_path
from cortex_node.contracts import HEARTBEAT_JITTER, format_ts
from cortex_node.store.db import Store, StoreError
from cortex_node.swarm.coordinator import Coordinator, load_or_create_node_id

log = logging.getLogger("cortex.node")

GC_THRESHOLDS = (20_000, 20, 20)
SEAL_DEADLINE_S = 30.0  # in-flight work gets this long to finish when a node is sealed
RUNTIME_FILE = "runtime.json"
LOCK_FILE = "node.lock"


class StartupError(Exception):
    """The node cannot start; the message says why and what to do. Exit code 1."""


def build_app(settings: NodeSettings, clock: Clock, *, node_id: str | None = None) -> web.Application:
    """One node as an Application. Its settings must carry the port it will serve on (peers
    learn its URL from them). Nothing is opened before the app starts."""
    if node_id is None:
        node_id = load_or_create_node_id(settings.data_dir, clock.now_ms())
    coordinator = Coordinator(settings, Store(settings.data_dir / "swarm.db"), clock, node_id)
    # outermost first: connection tracking, errors, the browser guard (Host, Origin, JSON bodies),
    # auth (failed attempts draw on the anonymous bucket), the per-client limit, the body deadline
    anonymous: RateLimiter | None = None
    if settings.rate_limit_per_s > 0:
        anonymous = RateLimiter(settings.rate_limit_per_s, 2 * settings.rate_limit_per_s, clock.monotonic)
    middlewares = [connection_tracking_middleware, error_middleware,
                   make_browser_guard_middleware(HostPolicy.for_settings(settings)),
                   make_auth_middleware(settings.token, anonymous)]
    if settings.rate_limit_per_s > 0:
        middlewares.append(make_rate_limit_middleware(settings.rate_limit_per_s, 2 * settings.rate_limit_per_s,
                                                      clock.monotonic, anonymous))
    middlewares.append(body_deadline_middleware)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[COORDINATOR] = coordinator
    app.add_routes(routes)
    app.add_routes(coordinator.a2a_routes())
    app.cleanup_ctx.append(_node_life)
    return app


async def _node_life(app: web.Application) -> AsyncIterator[None]:
    """Start: open the store, register, start the workers and loops. Stop: the reverse (in-flight
    work gets SEAL_DEADLINE_S when the daemon has not already waited for it)."""
    coordinator = app[COORDINATOR]
    try:
        await coordinator.open_store()
    except StoreError as exc:
        raise StartupError(str(exc)) from None
    tasks: list[asyncio.Task] = []
    try:
        await coordinator.start()
        tasks = [asyncio.create_task(discovery_loop(coordinator), name="discovery"),
                 asyncio.create_task(heartbeat_loop(coordinator), name="heartbeat"),
                 asyncio.create_task(sweep_loop(coordinator), name="sweep")]
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        await coordinator.stop(SEAL_DEADLINE_S)
        await coordinator.close_store()


def jittered(interval_s: float) -> float:
    return interval_s * (1 + random.uniform(-HEARTBEAT_JITTER, HEARTBEAT_JITTER))


async def heartbeat_loop(c: Coordinator) -> None:
    interval = c.settings.heartbeat_interval_ms / 1000
    while not c.heartbeat_stopped:
        try:
            await c.heartbeat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed beat is logged; the next one may succeed
            log.error("heartbeat failed: %s", exc)
        # sleep until the next beat, or until new peers (or a drain) should hear from us now
        await c.wait_for_beat_request(jittered(interval))


async def sweep_loop(c: Coordinator) -> None:
    interval = max(0.05, min(5.0, c.settings.stale_after_ms / 1000 / 10))
    while True:
        before = c.clock.monotonic()
        await c.clock.sleep(interval)
        # a sleep that overran by much means this process was blocked or stopped: what arrived
        # meanwhile has not been read yet, so peers must not be judged by it
        c.note_loop_lag(c.clock.monotonic() - before - interval)
        try:
            await c.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("stale sweep failed: %s", exc)


async def discovery_loop(c: Coordinator) -> None:
    """Seeds and known peers' cards: at start, then every few heartbeats. Unreachable peers are
    retried with backoff inside discover_peers; nothing here is ever fatal."""
    interval = max(1.0, min(60.0, 4 * c.settings.heartbeat_interval_ms / 1000))
    while True:
        try:
            await c.discover_peers()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("peer discovery failed: %s", exc)
        await c.clock.sleep(interval)


@dataclass
class DataDirLock:
    """One daemon per data directory: a second one would fight over the node id and database."""

    path: Path
    fd: int = -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = -1
            raise StartupError(
                f"another cortex-node (pid {other}) is using the data directory {self.path.parent}; "
                "stop it or pass a different --data-dir"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self.fd >= 0:
            with suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (another cortex-node?); choose another with --port"
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
    except socket.gaierror as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host!r}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


LISTEN_BACKLOG = 512
FD_RESERVE = 256  # descriptors kept back from inbound connections: database, peers, commands, logs


def connection_budget() -> int:
    """How many inbound connections may be open at once: the descriptor limit (raised to its
    hard limit, at most 65,536) less FD_RESERVE, so held-open sockets can never take the
    descriptors the node needs for its database, its peers and its heartbeats."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    limit = 65_536 if soft == resource.RLIM_INFINITY else soft
    return max(64, limit - FD_RESERVE)


def operator_token(data_dir: Path) -> tuple[str, bool]:
    """No token configured: the node's own, from (or made in) ``<data_dir>/operator_token``;
    (token, whether it was made now)."""
    try:
        return load_or_create_operator_token(data_dir)
    except OSError as exc:
        raise StartupError(f"the data directory {data_dir} is not writable: cannot keep the operator token "
                           f"{operator_token_path(data_dir).name} there ({exc.strerror or exc})") from None


def prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"the data directory {data_dir} is not writable: {exc.strerror or exc}") from None


async def run_node(settings: NodeSettings, clock: Clock | None = None) -> int:
    """Run the daemon until sealed. Returns the exit code; raises StartupError to refuse."""
    clock = clock or SystemClock()
    check_bind_policy(settings)
    data_dir = settings.data_dir.expanduser()
    prepare_data_dir(data_dir)
    lock = DataDirLock(data_dir / LOCK_FILE)
    lock.acquire()
    runner: web.AppRunner | None = None
    try:
        made_token: bool | None = None  # None: a token was configured
        if not settings.token:
            token, made_token = operator_token(data_dir)
            settings = replace(settings, token=token)
        sock = bind_socket(settings.host, settings.port)
        settings = replace(settings, port=sock.getsockname()[1], data_dir=data_dir)
        try:
            app = build_app(settings, clock)  # writes the node id on first start
        except OSError as exc:  # e.g. the disk filled up since prepare_data_dir
            sock.close()
            raise StartupError(f"the data directory {data_dir} is not writable: {exc.strerror or exc}") from None
        coordinator = app[COORDINATOR]
        guard = ConnectionGuard(settings.max_connections_per_client, connection_budget(),
                                settings.header_timeout_ms / 1000, IDLE_TIMEOUT_S)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_TIMEOUT_S)
        try:
            await runner.setup()  # the node starts here (see _node_life)
        except BaseException:
            sock.close()
            raise
        # Everything built at start lives as long as the daemon: keep it out of the collector's
        # walks, and collect young objects less often (request garbage is freed by refcount).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        await GuardedSockSite(runner, sock, guard, shutdown_timeout=5.0, backlog=LISTEN_BACKLOG).start()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(coordinator.seal(f"signal {s.name}")))
        me = coordinator.get_node(coordinator.node_id)
        write_runtime(data_dir, {"pid": os.getpid(), "nodeId": me.id, "name": me.name,
                                 "url": settings.client_url, "publicUrl": settings.public_url,
                                 "port": settings.port, "startedAt": format_ts(clock.now_ms())})
        log.info("cortex-node %s (%s) listening on %s, data in %s", me.name, me.id, settings.client_url, data_dir)
        if made_token is not None:
            log.info("no swarm token configured: every request but /healthz, the agent card and /openapi.json "
                     "needs this node's operator token, %s %s (cortex swarm and cortex-tui on this machine read "
                     "it from there)", "made in" if made_token else "kept in", operator_token_path(data_dir))

        await coordinator.shutdown_requested.wait()
        log.info("sealing: finishing in-flight work and leaving the swarm")
        # in-flight work finishes while the server still answers, so waiting peers get their results
        await coordinator.stop(SEAL_DEADLINE_S)
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        with suppress(OSError):
            (data_dir / RUNTIME_FILE).unlink()
        lock.release()


def write_runtime(data_dir: Path, info: dict[str, Any]) -> None:
    tmp = data_dir / (RUNTIME_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(data_dir / RUNTIME_FILE)


