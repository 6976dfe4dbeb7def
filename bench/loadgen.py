"""The load generator: one process, raw asyncio HTTP/1.1 keep-alive connections (on uvloop
where it is installed, as the node is).

    python -m bench.loadgen < spec.json > result.json

It is deliberately lean (precomputed request heads, ``%``-templated bodies, a minimal
Content-Length/chunked response parser, no HTTP client library) so that one client core can
out-run the servers it measures; it still reports its own CPU use, and a figure taken while the
client was above ``CLIENT_BOUND_PCT`` of a core belongs to the client, not to the server.

Two modes:

``closed``  ``concurrency`` connections, each sends its next request as soon as the previous
            answer is in (throughput at a given concurrency);
``open``    requests are due at a fixed ``rate`` whatever the server does; a pool of
            ``connections`` workers sends them, and latency runs from the time a request was
            due, so a server that falls behind shows it in p99 (no coordinated omission).

The spec names a body kind (see ``BODIES``); ``server_pids`` are sampled with psutil at the
start and the end of the measured window, so the server's CPU per request is exact to the window.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import random
import socket
import string
import sys
import time
from collections import Counter
from typing import Any, Callable

import psutil

from bench.procs import AUTH

CLIENT_BOUND_PCT = 90.0


# --- request bodies ---------------------------------------------------------------------------------
def _run_prefix() -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(6))


def _rpc(method: str, params: Any, rpc_id: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}


def _template(doc: Any, marks: dict[str, str]) -> str:
    """JSON text with ``%(name)s`` holes where the marker strings (quoted) were."""
    text = json.dumps(doc, separators=(",", ":")).replace("%", "%%")
    for name, marker in marks.items():
        text = text.replace(json.dumps(marker), f"%({name})s")
    return text


def body_a2a_echo(spec: dict[str, Any]) -> Callable[[int], bytes]:
    prefix = _run_prefix()
    doc = _rpc("SendMessage", {"message": {"messageId": "@MID@", "role": "ROLE_USER",
                                           "parts": [{"text": "hello from the benchmark"}]}}, "@RID@")
    tpl = _template(doc, {"mid": "@MID@", "rid": "@RID@"})
    return lambda i: (tpl % {"mid": f'"m-{prefix}-{i}"', "rid": f'"{i}"'}).encode()


def body_a2a_directive(spec: dict[str, Any]) -> Callable[[int], bytes]:
    """A query_resources directive as a peer sends it (envelope.directive_to_message), a fresh
    directive id per request."""
    from cortex_node.contracts import DirectiveKind, SwarmDirective
    from cortex_node.swarm.envelope import directive_to_message

    prefix = _run_prefix()
    marker = "dir_@DIRID@"
    d = SwarmDirective(directive_id=marker, source_node_id=spec.get("source_node_id", "node_bench_source"),
                       target_node_id=spec["target_node_id"], kind=DirectiveKind(spec.get("directive_kind", "query_resources")),
                       payload=spec.get("payload", {}), ttl_ms=spec.get("ttl_ms", 120_000))
    text = json.dumps(_rpc("SendMessage", {"message": directive_to_message(d)}, "@RID@"), separators=(",", ":"))
    text = text.replace("%", "%%").replace(json.dumps("@RID@"), "%(rid)s").replace("@DIRID@", "%(did)s")
    return lambda i: (text % {"rid": f'"{i}"', "did": f"{prefix}{i:x}"}).encode()


def body_rest_dispatch(spec: dict[str, Any]) -> Callable[[int], bytes]:
    body = json.dumps({"targetNodeId": spec["target_node_id"], "kind": spec.get("directive_kind", "query_resources"),
                       "payload": spec.get("payload", {}), "wait": True}).encode()
    return lambda i: body


def heartbeat_peers(count: int, *, base_port: int = 20000, processes: int = 2, run: str | None = None,
                    host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """``count`` fake peers: a distinct node id and endpoint each (endpoint ports from ``base_port``)."""
    run = run or _run_prefix()
    return [{"id": f"node_bench{run}_{k:05d}", "name": f"peer-{k:05d}", "endpoint": f"http://{host}:{base_port + k}",
             "processes": processes} for k in range(count)]


def heartbeat_params(peer: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    """The params of one SwarmHeartbeat, built by the node's own membership.heartbeat_payload."""
    from cortex_node.contracts import Lifecycle, NodeMetrics, NodeTier, ProcessInfo, Usage, SwarmNodeRegistration
    from cortex_node.contracts import Snapshot
    from cortex_node.swarm.membership import heartbeat_payload

    agents = [ProcessInfo(pid=2 + j, parent_pid=1, name="echo", role="agent", status="running", node_id=peer["id"],
                          agent_id=f"agent-{j}", session_id=f"sess-{j}", agent_type="echo",
                          resources=Usage(tokens_in=100 * seq, tokens_out=40 * seq, cost_usd=0.001 * seq,
                                                     tool_calls=seq))
              for j in range(peer.get("processes", 2))]
    reg = SwarmNodeRegistration(id=peer["id"], name=peer["name"], endpoint=peer["endpoint"],
                                a2a_endpoint=peer["endpoint"] + "/a2a", tier=NodeTier.ROOT,
                                capabilities=["heartbeat", "report", "topology"], boot_id="bench0")
    metrics = NodeMetrics(cpu_percent=12.5, memory_used_mb=2048.0, memory_total_mb=16384.0, disk_used_mb=1e5,
                          disk_total_mb=5e5, active_sessions=1, active_processes=len(agents), uptime_seconds=60.0 * seq)
    snap = Snapshot(tokens_in=1000 * seq, tokens_out=400 * seq, cost_usd=0.01 * seq, tool_calls=seq, cpu_ms=50.0 * seq,
                    cpu_percent=12.5, memory_used_mb=2048.0, memory_total_mb=16384.0, disk_used_mb=1e5,
                    disk_total_mb=5e5, active_sessions=1, active_processes=len(agents), uptime_seconds=60.0 * seq)
    return heartbeat_payload(reg, Lifecycle.ACTIVE, metrics, snap, agents, int(time.time() * 1000))


_SEQ_MARK = 987654321  # a counter value in the template, replaced by the request's own


def body_heartbeat(spec: dict[str, Any]) -> Callable[[int], bytes]:
    """SwarmHeartbeat from ``peers`` distinct fake nodes, round robin; cumulative counters grow.
    With ``digest_version`` every peer sends the membership digest version it holds, as a real
    peer does (Membership.fan_out), so the node may answer with the version alone."""
    peers = spec.get("peer_list") or heartbeat_peers(spec.get("peers", 1000), base_port=spec.get("base_port", 20000),
                                                     processes=spec.get("processes", 2), run=spec.get("run"))
    prefix = _run_prefix()
    templates = []
    for peer in peers:
        params = heartbeat_params(peer)
        params["counters"]["tokensIn"] = _SEQ_MARK
        if spec.get("digest_version"):  # a peer in steady state names the membership it already holds
            params["digestVersion"] = spec["digest_version"]
        text = json.dumps(_rpc("SwarmHeartbeat", params, "@RID@"), separators=(",", ":")).replace("%", "%%")
        text = text.replace(json.dumps("@RID@"), "%(rid)s").replace(str(_SEQ_MARK), "%(seq)d")
        templates.append(text)
    n = len(templates)
    base = int(spec.get("seq_base", 1)) * 10_000_000  # later steps pass a larger base: counters keep growing
    return lambda i: (templates[i % n] % {"rid": f'"{prefix}{i}"', "seq": base + 10 * i}).encode()


def body_static(spec: dict[str, Any]) -> Callable[[int], bytes]:
    body = spec["body"].encode() if isinstance(spec["body"], str) else json.dumps(spec["body"]).encode()
    return lambda i: body


BODIES: dict[str, Callable[[dict[str, Any]], Callable[[int], bytes]]] = {
    "a2a_echo": body_a2a_echo, "a2a_directive": body_a2a_directive, "rest_dispatch": body_rest_dispatch,
    "heartbeat": body_heartbeat, "static": body_static,
}


# --- answers: a sample of them is parsed and checked ---------------------------------------------------
def check_jsonrpc_result(body: bytes) -> str | None:
    doc = json.loads(body)
    if doc.get("error") is not None or "result" not in doc:
        return f"JSON-RPC error: {json.dumps(doc.get('error'))[:300]}"
    return None


def check_task_completed(body: bytes) -> str | None:
    doc = json.loads(body)
    problem = check_jsonrpc_result(body)
    if problem:
        return problem
    state = ((doc["result"].get("task") or {}).get("status") or {}).get("state")
    return None if state == "TASK_STATE_COMPLETED" else f"task state {state}: {body[:300]!r}"


def check_rest_completed(body: bytes) -> str | None:
    doc = json.loads(body)
    return None if doc.get("status") == "completed" else f"directive {doc.get('status')}: {doc.get('error')}"


CHECKS: dict[str, Callable[[bytes], str | None]] = {
    "jsonrpc_result": check_jsonrpc_result, "task_completed": check_task_completed,
    "rest_completed": check_rest_completed,
}


# --- the HTTP/1.1 connection ------------------------------------------------------------------------
class HttpConnection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.head_end = -1
        self.need = -1  # total bytes of the current answer once the head is parsed, -2 for chunked
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.fut is None:
            return
        buf = self.buf
        if self.head_end < 0:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i]).lower()
            self.head_end = i + 4
            self.status = int(head[9:12])
            cl = head.find(b"\r\ncontent-length:")
            if cl >= 0:
                end = head.find(b"\r\n", cl + 2)
                self.need = self.head_end + int(head[cl + 17:end if end >= 0 else len(head)])
            elif b"transfer-encoding: chunked" in head:
                self.need = -2
            else:
                self.need = self.head_end  # no body (204/304) or close-delimited: not used by our servers
        if self.need == -2:
            body = self._chunked()
            if body is None:
                return
        else:
            if len(buf) < self.need:
                return
            body = bytes(buf[self.head_end:self.need])
            del buf[:self.need]
        fut, self.fut = self.fut, None
        self.head_end, self.need = -1, -1
        fut.set_result((self.status, body))

    def _chunked(self) -> bytes | None:
        buf, pos, out = self.buf, self.head_end, bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    return None
                del buf[:end + 4]
                return bytes(out)
            if len(buf) < eol + 2 + size + 2:
                return None
            out += buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2

    def request(self, data: bytes) -> asyncio.Future:
        assert self.transport is not None, "the connection is closed"
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.fut


async def open_connection(host: str, port: int, timeout: float = 10.0) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(HttpConnection, host, port), timeout)
    return proto  # type: ignore[return-value]


# --- the run ------------------------------------------------------------------------------------------
def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = float("nan")
    return out


def _core_busy() -> list[float]:
    """Busy seconds of each CPU so far (everything but idle and iowait)."""
    out = []
    for t in psutil.cpu_times(percpu=True):
        total = sum(t)
        out.append(total - t.idle - getattr(t, "iowait", 0.0))
    return out


def percentiles(values_ns: list[int]) -> dict[str, float]:
    if not values_ns:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    v = sorted(values_ns)
    n = len(v)

    def at(q: float) -> float:
        return v[min(n - 1, max(0, int(round(q * n + 0.5)) - 1))] / 1e6

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": v[-1] / 1e6, "mean": sum(v) / n / 1e6}


class Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host = spec.get("host", "127.0.0.1")
        self.port = int(spec["port"])
        path = spec.get("path", "/a2a")
        headers = {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json", **AUTH,
                   **spec.get("headers", {"A2A-Version": "1.0"})}
        self.head = (f"{spec.get('method', 'POST')} {path} HTTP/1.1\r\n"
                     + "".join(f"{k}: {v}\r\n" for k, v in headers.items())).encode()
        self.make_body = BODIES[spec["body"]["kind"]](spec["body"])
        self.check = CHECKS.get(spec.get("validate") or "", None)
        self.check_every = int(spec.get("check_every", 50))
        self.server_pids = [int(p) for p in spec.get("server_pids", [])]
        self.warmup_s = float(spec.get("warmup_s", 1.0))
        self.duration_s = float(spec.get("duration_s", 5.0))
        self.timeout_s = float(spec.get("timeout_s", 30.0))
        self.seq = 0
        self.latencies: list[int] = []
        self.completed_in_window = 0
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.checked = 0
        self.check_failures = 0
        self.check_example: str | None = None
        self.measuring = False
        self.stopping = False
        self.t_start = self.t_end = 0.0

    def request_bytes(self) -> bytes:
        body = self.make_body(self.seq)
        self.seq += 1
        return self.head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    def record(self, sent_ns: int, done_ns: int, status: int, body: bytes) -> None:
        self.statuses[status] += 1
        if self.measuring and done_ns <= self.t_end_ns:
            self.completed_in_window += 1
            if sent_ns >= self.t_start_ns:
                self.latencies.append(done_ns - sent_ns)
        if status != 200:
            self.errors[f"HTTP {status}"] += 1
            if self.check_example is None:
                self.check_example = f"HTTP {status}: {body[:300]!r}"
        elif self.check is not None and (self.checked < 20 or self.seq % self.check_every == 0):
            self.checked += 1
            try:
                problem = self.check(body)
            except ValueError as exc:
                problem = f"not JSON: {exc}"
            if problem:
                self.check_failures += 1
                self.check_example = self.check_example or problem

    async def _clock(self) -> None:
        """Warm-up, then the measured window: CPU figures are sampled exactly at its two ends."""
        await asyncio.sleep(self.warmup_s)
        self.cpu0, self.srv0, self.core0 = time.process_time(), _cpu(self.server_pids), _core_busy()
        self.t_start, self.t_start_ns = time.perf_counter(), time.perf_counter_ns()
        self.t_end_ns = self.t_start_ns + int(self.duration_s * 1e9)
        self.measuring = True
        await asyncio.sleep(self.duration_s)
        self.cpu1, self.srv1, self.core1 = time.process_time(), _cpu(self.server_pids), _core_busy()
        self.t_end = time.perf_counter()
        self.stopping = True

    async def closed_worker(self, conn: HttpConnection) -> None:
        while not self.stopping:
            data = self.request_bytes()
            sent = time.perf_counter_ns()
            try:
                status, body = await asyncio.wait_for(conn.request(data), self.timeout_s)
            except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
                self.errors[type(exc).__name__] += 1
                try:
                    conn = await open_connection(self.host, self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                continue
            self.record(sent, time.perf_counter_ns(), status, body)

    async def open_worker(self, conn: HttpConnection, due: asyncio.Queue) -> None:
        while True:
            intended_ns = await due.get()
            if intended_ns is None:  # the end: workers stop on a sentinel, not by cancellation (see run)
                return
            if self.stopping:
                continue  # drain what was due after the end without sending it
            data = self.request_bytes()
            try:
                status, body = await asyncio.wait_for(conn.request(data), self.timeout_s)
            except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
                self.errors[type(exc).__name__] += 1
                try:
                    conn = await open_connection(self.host, self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                continue
            self.record(intended_ns, time.perf_counter_ns(), status, body)

    async def run(self) -> dict[str, Any]:
        mode = self.spec.get("mode", "closed")
        n_conn = int(self.spec.get("concurrency" if mode == "closed" else "connections", 32))
        conns = await asyncio.gather(*(open_connection(self.host, self.port) for _ in range(n_conn)))
        clock = asyncio.create_task(self._clock())
        if mode == "closed":
            workers = [asyncio.create_task(self.closed_worker(c)) for c in conns]
            await clock
            await asyncio.wait(workers, timeout=self.timeout_s)
        else:
            rate = float(self.spec["rate"])
            due: asyncio.Queue[int] = asyncio.Queue()
            workers = [asyncio.create_task(self.open_worker(c, due)) for c in conns]
            t0 = time.perf_counter_ns()
            sent = 0
            backlog_max = 0
            while not self.stopping:
                now = time.perf_counter_ns()
                should = int((now - t0) * rate / 1e9) + 1  # request i is due at t0 + i / rate
                while sent < should:
                    due.put_nowait(t0 + int(sent * 1e9 / rate))
                    sent += 1
                backlog_max = max(backlog_max, due.qsize())
                # sleep until the next request is due, at least 1 ms: uvloop's timers have a
                # millisecond resolution (a shorter sleep would spin the client at 100 % CPU), and
                # a request sent up to 1 ms late counts that millisecond in its latency
                next_due = t0 + int(sent * 1e9 / rate)
                await asyncio.sleep(max(0.001, (next_due - time.perf_counter_ns()) / 1e9))
            await clock
            self.backlog_max = backlog_max
            # behind what is still queued (skipped: it was due after the end), one stop per worker;
            # requests in flight finish first (they do not count past the window)
            for _ in workers:
                due.put_nowait(None)  # type: ignore[arg-type]
            await asyncio.wait(workers, timeout=self.timeout_s)
        # Python 3.11's wait_for can swallow a cancellation that races a completed request, so a
        # cancelled worker may live on: nothing here waits on a worker without a bound.
        for w in workers:
            w.cancel()
        await asyncio.wait(workers, timeout=1.0)
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        return self.result(mode, n_conn)

    def result(self, mode: str, n_conn: int) -> dict[str, Any]:
        window = self.t_end - self.t_start
        client_cpu = self.cpu1 - self.cpu0
        server_cpu = {str(pid): self.srv1[pid] - self.srv0[pid] for pid in self.server_pids}
        total_server = sum(server_cpu.values())
        n = self.completed_in_window
        out: dict[str, Any] = {
            "mode": mode, "connections": n_conn, "window_s": round(window, 3), "requests": n,
            "rate": n / window if window > 0 else 0.0, "latency_ms": percentiles(self.latencies),
            "latency_samples": len(self.latencies), "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": dict(self.errors), "client_cpu_s": client_cpu,
            "client_cpu_pct": 100.0 * client_cpu / window if window > 0 else 0.0,
            "server_cpu_s": server_cpu,
            "server_cpu_pct": 100.0 * total_server / window if window > 0 else 0.0,
            "server_cpu_us_per_req": 1e6 * total_server / n if n else float("nan"),
            # how busy each core was in the window, whoever used it: the servers' and the client's
            # share of it against the rest tells a clean measurement from one on a busy machine
            "core_busy_pct": [round(100.0 * (b - a) / window, 1) if window > 0 else None
                              for a, b in zip(self.core0, self.core1)],
            "checked": self.checked, "check_failures": self.check_failures, "check_example": self.check_example,
        }
        out["client_bound"] = out["client_cpu_pct"] > CLIENT_BOUND_PCT
        if mode == "open":
            out["offered_rate"] = float(self.spec["rate"])
            out["backlog_max"] = getattr(self, "backlog_max", 0)
        return out


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """One run on a fresh event loop. The loop is not torn down (asyncio.run would wait, without
    a bound, for any task that survived its cancellation); main() exits the process right after."""
    loop = _new_loop(spec.get("uvloop", True))
    asyncio.set_event_loop(loop)
    result = loop.run_until_complete(Run(spec).run())
    result["client_loop"] = f"{type(loop).__module__}.{type(loop).__name__}"
    return result


def _new_loop(want_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop when installed (the client needs the headroom), else asyncio's own loop."""
    if want_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


def main() -> int:
    spec = json.loads(sys.stdin.read())
    # never hang: past this, every thread's stack goes to stderr and the process exits
    faulthandler.dump_traceback_later(float(spec.get("warmup_s", 1)) + float(spec.get("duration_s", 5))
                                      + 2 * float(spec.get("timeout_s", 30)) + 20, exit=True)
    if spec.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(spec["cpu"])})
    result = run_spec(spec)
    sys.stdout.write(json.dumps(result, allow_nan=True) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
