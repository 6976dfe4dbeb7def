"""HTTP plumbing shared by every route: the JSON error shape, what a request must look like to
be served at all (Host, Origin, Content-Type), bearer auth, per-client request limits, query
parsing, and the inbound connection guard (per-client connection cap, header timeout).

The order a request meets them (``app.build_app``): connection tracking, errors, the browser
guard (403 for a foreign Host or Origin, 415 for a body that is not JSON), auth (401; failed
attempts draw on their own bucket), the per-client limit (429), the body read under a deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from cortex_node import jsonfast
from cortex_node.config import NodeSettings, is_loopback
from cortex_node.contracts import quote, to_wire
from cortex_node.store.db import StoreError

log = logging.getLogger("cortex.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 1024 * 1024  # larger request bodies get a 413
BODY_TIMEOUT_S = 30.0  # a request body (<= 1 MiB) must arrive within this; else 408 and the connection closes

# Routes anyone may read: the A2A agent card (spec §8), liveness and the API description.
PUBLIC_PREFIXES = ("/.well-known/", "/healthz", "/openapi.json")

_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "request_timeout", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    429: "too_many_requests", 500: "internal", 503: "unavailable",
}


class ApiError(web.HTTPException):
    """Raised by handlers; rendered as {"error": {"code", "message"}} with its HTTP status."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": {"code": code or _STATUS_CODES.get(status, "error"), "message": message}}),
            content_type="application/json",
        )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsonfast.dumps(to_wire(data)), status=status, content_type="application/json")


def error_body(status: int, message: str, code: str | None = None) -> web.Response:
    return web.Response(
        text=json.dumps({"error": {"code": code or _STATUS_CODES.get(status, "error"), "message": message}}),
        status=status, content_type="application/json",
    )


# set by the auth middleware (aiohttp before 3.13 has no RequestKey: a plain key there)
AUTHENTICATED: Any = web.RequestKey("cortex_authenticated", bool) if hasattr(web, "RequestKey") else "cortex_authenticated"


def _bearer_matches(request: web.Request, expected: bytes) -> bool:
    given = request.headers.getall("Authorization", [])
    if len(given) != 1:
        return False
    try:
        # aiohttp keeps bytes that are not UTF-8 as surrogates: they can never match, and must
        # not turn into a 500 either
        raw = given[0].encode("utf-8", "surrogateescape")
    except UnicodeError:
        return False
    # constant-time compare: the token must not leak through timing either
    return hmac.compare_digest(raw, expected)


def make_auth_middleware(token: str | None, failed: "RateLimiter | None" = None) -> Callable:
    """Bearer auth on everything but the public routes. A wrong or missing token is a 401; a
    client that keeps failing draws on ``failed`` (its own bucket, never the one its right-token
    requests use) and gets 429 when that is empty."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None:
            request[AUTHENTICATED] = True
            return await handler(request)
        if request.path.startswith(PUBLIC_PREFIXES):
            request[AUTHENTICATED] = False
            return await handler(request)
        if _bearer_matches(request, expected):
            request[AUTHENTICATED] = True
            return await handler(request)
        if failed is not None:
            refused = failed.refuse(request, "failed authentications")
            if refused is not None:
                return refused
        resp = error_body(401, "missing or wrong swarm token: send 'Authorization: Bearer <token>'")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="cortex-swarm"'
        return resp

    return auth


# --- what a request must look like to be served: no browser can drive the node -------------------
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
JSON_TYPE = "application/json"


HOST_ANSWERS_KEPT = 256  # distinct Host values remembered (cleared when full: a flood of names costs nothing)


class HostPolicy:
    """The names this node answers to (the Host header) and the origins it accepts (Origin).

    Host: an IP literal is always accepted (a browser sends one only for a page of that very
    address, so it cannot be DNS rebinding); a name must be one of the node's own: its bind
    host, the host of its advertise URL and client URL, localhost when it listens on loopback or
    on every address (then also the machine's host names), and ``swarm.allowedHosts`` (".lan"
    matches any name under lan; "*" turns the Host check off).
    Origin: only a request from one of the node's own origins passes: the origin of its public
    or client URL, or exactly the address the request was sent to (same origin). "null" never.
    """

    def __init__(self, names: Iterable[str], suffixes: Iterable[str] = (), any_host: bool = False,
                 origins: Iterable[tuple[str, str, int]] = ()) -> None:
        self.names = frozenset(names)
        self.suffixes = tuple(suffixes)
        self.any_host = any_host
        self.origins = frozenset(origins)
        self._host_answers: dict[str, bool] = {}

    @classmethod
    def for_settings(cls, settings: NodeSettings) -> "HostPolicy":
        names: set[str] = set()
        suffixes: list[str] = []
        origins: set[tuple[str, str, int]] = set()
        wildcard = settings.host.strip() in ("0.0.0.0", "::", "")
        for url in (settings.public_url, settings.client_url):
            parts = urlsplit(url)
            if parts.hostname:
                host = _norm(parts.hostname)
                names.add(host)
                origins.add((parts.scheme, host, parts.port or _default_port(parts.scheme)))
        if not wildcard:
            names.add(_norm(settings.host))
        if wildcard or is_loopback(settings.host):
            names |= {"localhost", "127.0.0.1", "::1"}
        if wildcard:
            names |= {_norm(n) for n in (socket.gethostname(), socket.getfqdn()) if n}
        any_host = False
        for name in settings.allowed_hosts:
            if name == "*":
                any_host = True
            elif name.startswith("."):
                suffixes.append(name)
            else:
                names.add(_norm(name))
        return cls(names, suffixes, any_host, origins)

    def host_ok(self, header: str) -> bool:
        """Whether ``header`` (a Host value) names this node; answers are remembered (a node hears
        a handful of distinct Host values, and this runs on every request)."""
        known = self._host_answers.get(header)
        if known is None:
            if len(self._host_answers) >= HOST_ANSWERS_KEPT:
                self._host_answers.clear()
            known = self._host_answers[header] = self._host_ok(header)
        return known

    def _host_ok(self, header: str) -> bool:
        split = split_host_port(header)
        if split is None:
            return False
        if self.any_host:
            return True
        host = split[0]
        if _is_ip(host) or host in self.names:
            return True
        return any(host.endswith(suffix) for suffix in self.suffixes)

    def origin_ok(self, origin: str, host_header: str | None, request_scheme: str = "http") -> bool:
        try:
            parts = urlsplit(origin.strip())
            scheme, host, port = parts.scheme.lower(), _norm(parts.hostname or ""), parts.port
        except ValueError:
            return False
        if scheme not in ("http", "https") or not host or parts.path not in ("", "/"):
            return False
        port = port or _default_port(scheme)
        if (scheme, host, port) in self.origins:
            return True
        if host_header is None or scheme != request_scheme or not self.host_ok(host_header):
            return False
        target = split_host_port(host_header)
        return target is not None and target[0] == host and (target[1] or _default_port(scheme)) == port


def _norm(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_host_port(header: str) -> tuple[str, int | None] | None:
    """'name:port', '[v6]:port', 'name' -> (normalised host, port or None); None when malformed."""
    header = header.strip()
    if not header or len(header) > 300 or any(c in header for c in " /\\@?#\t"):
        return None
    port: str | None = None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        host, rest = header[1:end], header[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif header.count(":") == 1:
        host, port = header.split(":")
    elif ":" in header:  # a bare IPv6 address
        host = header
    else:
        host = header
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    host = _norm(host)
    return (host, int(port) if port is not None else None) if host else None


def make_browser_guard_middleware(policy: HostPolicy) -> Callable:
    """403 for a Host that is not one of the node's names (DNS rebinding) or an Origin that is
    not its own (a web page elsewhere); 415 for a body that is not declared JSON, so a form or a
    text/plain body (what a browser may send without asking first) is never parsed."""

    @web.middleware
    async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = request.headers.getall("Host", [])
        if len(hosts) > 1:
            return error_body(400, "more than one Host header")
        host = hosts[0] if hosts else None
        if host is not None and not policy.host_ok(host):
            return error_body(403, f"Host {quote(host)} is not a name of this node (DNS rebinding?); "
                                   "add the names it should answer to to swarm.allowedHosts")
        origins = request.headers.getall("Origin", [])
        if origins and (len(origins) > 1 or not policy.origin_ok(origins[0], host, request.scheme)):
            return error_body(403, f"requests from web pages of other origins are refused (Origin "
                                   f"{quote(origins[0])}); use the CLI, the TUI or a client that sends no Origin")
        if request.method in BODY_METHODS and (request.body_exists or "Content-Type" in request.headers):
            if request.content_type != JSON_TYPE:
                shown = request.headers.get("Content-Type", "none")
                return error_body(415, f"the request body must be JSON, sent with 'Content-Type: {JSON_TYPE}' "
                                       f"(got {quote(shown)})")
        return await handler(request)

    return browser_guard


async def read_body(request: web.Request) -> bytes:
    """The whole body (cached by aiohttp for the handler) within BODY_TIMEOUT_S; a client that
    trickles it gets 408. Too large a body raises 413 as before."""
    if request.content.is_eof():  # all of it arrived with the headers (most bodies): no deadline to keep
        return await request.read()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):  # no extra task, unlike wait_for
            return await request.read()
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s") from None


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read every body under the deadline before the handler sees the request."""
    if request.body_exists:
        try:
            await read_body(request)
        except ApiError as exc:
            if exc.status == 408:
                exc.force_close()  # the rest of the body may never come: this connection is done
            raise
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as the JSON error shape; no traceback ever reaches a client."""
    try:
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason or "error"
        if exc.status == 404:
            message = f"no route {quote(request.method)} {quote(request.path)}; see GET /openapi.json"
        elif exc.status == 405:
            message = f"{quote(request.method)} is not allowed on {quote(request.path)}"
        elif exc.status == 413:
            message = f"request body too large (limit {MAX_BODY_BYTES} bytes)"
        resp = error_body(exc.status, message)
        for key in ("Allow", "Retry-After"):
            if key in exc.headers:
                resp.headers[key] = exc.headers[key]
        return resp
    except StoreError as exc:
        # the database cannot take writes (disk full, read-only, I/O error): say so, and keep serving
        full = "full" in str(exc).lower()
        log.error("%s %s: %s", request.method, request.path, exc)
        return error_body(507 if full else 503, f"the node cannot store data right now: {exc}",
                          "insufficient_storage" if full else "unavailable")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_body(500, "internal error; see the node's log")


# --- query parameters: a bad value is a 400 that names the parameter ------------------------------
def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter '{name}' must be an integer from {lo} to {hi}; got {quote(raw)}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter '{name}' must be an integer from {lo} to {hi}; got {quote(raw)}")
    return value


def query_enum(request: web.Request, name: str, enum_cls: Any) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return enum_cls(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ApiError(400, f"query parameter '{name}' must be one of {allowed}; got {quote(raw)}") from None


async def read_json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw and optional:  # no body at all; whitespace is not JSON
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "request body must be a JSON object")
    return doc


# --- per-client request limits --------------------------------------------------------------------
# Membership traffic is never throttled: a node flooded by one client must still hear its peers.
RATE_EXEMPT_PATHS = ("/healthz", "/.well-known/")
RATE_EXEMPT_METHODS = ("SwarmHeartbeat", "SwarmLeave")
MEMBERSHIP_SNIFF_BYTES = 256 * 1024  # an over-limit /a2a body is looked into only up to this size
MAX_TRACKED_CLIENTS = 10_000


class TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """A token bucket per client address (``rate`` per second, ``burst`` at most)."""

    def __init__(self, rate_per_s: float, burst: float, monotonic: Callable[[], float]) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.monotonic = monotonic
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, client: str) -> float:
        """Take one token; returns 0 when there was one, else the seconds until there is."""
        now = self.monotonic()
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED_CLIENTS:
                self.buckets.pop(next(iter(self.buckets)))  # the oldest client first: memory stays bounded
            bucket = self.buckets[client] = TokenBucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def refuse(self, request: web.Request, what: str = "requests") -> web.Response | None:
        """None when the client may go on; else the 429 to answer."""
        client = request.remote or "unknown"
        wait = self.take(client)
        return None if wait <= 0 else self.too_many(client, wait, what)

    def too_many(self, client: str, wait: float, what: str = "requests") -> web.Response:
        wait_s = max(1, int(wait + 0.999))
        resp = error_body(429, f"too many {what} from {client}: the limit is {self.rate:g} per second "
                               f"(burst {self.burst:g}); retry in {wait_s} s")
        resp.headers["Retry-After"] = str(wait_s)
        return resp


def make_rate_limit_middleware(rate_per_s: float, burst: float, monotonic: Callable[[], float],
                               anonymous: RateLimiter | None = None) -> Callable:
    """Runs after auth: a client with the token draws on its own bucket, one without (public
    routes; ``anonymous``, which auth also charges for failed attempts) on another, so nobody
    without the token can use up the operator's requests.
    SwarmHeartbeat and SwarmLeave pass even when the bucket is empty; to tell, an over-limit
    /a2a body of at most MEMBERSHIP_SNIFF_BYTES is read, and parsed only when it names one of
    them. Nothing else is ever read to decide."""
    authenticated = RateLimiter(rate_per_s, burst, monotonic)
    anonymous = anonymous or RateLimiter(rate_per_s, burst, monotonic)

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(RATE_EXEMPT_PATHS):
            return await handler(request)
        limiter = authenticated if request.get(AUTHENTICATED, True) else anonymous
        client = request.remote or "unknown"
        wait = limiter.take(client)
        if wait <= 0:
            return await handler(request)
        if request.path == "/a2a" and await _is_membership_call(request):
            return await handler(request)
        return limiter.too_many(client, wait)

    return rate_limit


async def _is_membership_call(request: web.Request) -> bool:
    """Only asked when a client is over its limit (the body is cached for the handler)."""
    length = request.content_length
    if request.method != "POST" or length is None or length > MEMBERSHIP_SNIFF_BYTES:
        return False
    try:
        raw = await read_body(request)
    except web.HTTPException:
        return False
    if not any(m.encode() in raw for m in RATE_EXEMPT_METHODS):
        return False
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("method") in RATE_EXEMPT_METHODS


# --- inbound connections: a cap per client address and a deadline for the request header ---------
IDLE_TIMEOUT_S = 75.0  # a kept-alive connection with no request in flight closes after this


class ConnectionGuard:
    """Counts open connections per client address (an IPv6 client by its /64) and in total.
    Over ``per_client`` (0 = no cap) or ``total``, a new connection gets a short 503 and is
    closed at once. A connection must send its first request header within ``header_timeout_s``
    and later ones within ``idle_timeout_s`` of the last answer, or it is closed: held-open
    sockets cannot pile up until the node runs out of descriptors and stops heartbeating."""

    def __init__(self, per_client: int, total: int, header_timeout_s: float,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.per_client = per_client
        self.total = total
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.open: dict[str, int] = {}
        self.count = 0
        self.refused = 0  # connections turned away since start
        self.expired = 0  # connections closed because no request came in time

    @staticmethod
    def client_key(peername: Any) -> str:
        host = peername[0] if isinstance(peername, (tuple, list)) and peername else None
        if not isinstance(host, str):
            return "unknown"
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.ipv4_mapped is not None:
                return str(addr.ipv4_mapped)
            return str(ipaddress.ip_network(f"{addr}/64", strict=False))
        return str(addr)

    def admit(self, key: str) -> str | None:
        """None when admitted (and counted); else why not."""
        if self.count >= self.total:
            return f"the node has too many open connections ({self.total})"
        held = self.open.get(key, 0)
        if self.per_client and held >= self.per_client:
            return f"too many open connections from {key} (limit {self.per_client})"
        self.open[key] = held + 1
        self.count += 1
        return None

    def release(self, key: str) -> None:
        held = self.open.get(key, 0) - 1
        if held > 0:
            self.open[key] = held
        else:
            self.open.pop(key, None)
        self.count -= 1

    def protocol_factory(self, make_handler: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedConnection(self, make_handler)


def _refusal(reason: str) -> bytes:
    body = json.dumps({"error": {"code": "unavailable", "message": reason + "; close idle ones and retry"}}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Retry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _GuardedConnection(asyncio.Protocol):
    """Wraps aiohttp's request handler for one connection: admission, and the header deadline
    (armed at connect and after each answer, disarmed while a request is being served)."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self._inner: Any = None
        self._key = ""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._active = 0
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        key = self._guard.client_key(transport.get_extra_info("peername"))
        refused = self._guard.admit(key)
        if refused is not None:
            self._guard.refused += 1
            self._transport.write(_refusal(refused))
            self._transport.close()
            return
        self._key = key
        self._inner = self._make_handler()
        self._inner.connection_made(transport)
        self._arm(self._guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is None:
            return
        inner, self._inner = self._inner, None
        self._guard.release(self._key)
        inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # the connection-tracking middleware tells us when a request is in flight. One timer per
    # connection, moved lazily: a request only updates two fields (creating and cancelling a timer
    # per request cost ~3 % of the node's time on the A2A intake benchmark)
    def request_started(self) -> None:
        self._active += 1

    def request_finished(self) -> None:
        self._active -= 1
        if self._active == 0 and self._inner is not None:
            self._deadline = self._loop.time() + self._guard.idle_timeout_s
            if self._timer is None:
                self._timer = self._loop.call_at(self._deadline, self._expire)

    def _arm(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + seconds
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._inner is None or self._transport is None or self._transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._active > 0:  # a request is being served: look again when it could be idle long enough
            self._timer = loop.call_at(now + self._guard.idle_timeout_s, self._expire)
        elif now < self._deadline:  # it answered meanwhile: its idle deadline moved
            self._timer = loop.call_at(self._deadline, self._expire)
        else:
            self._guard.expired += 1
            self._transport.abort()


@web.middleware
async def connection_tracking_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: marks the connection busy while its request is served (no header deadline)."""
    transport = request.transport
    conn = transport.get_protocol() if transport is not None else None
    if not isinstance(conn, _GuardedConnection):
        return await handler(request)
    conn.request_started()
    try:
        return await handler(request)
    finally:
        conn.request_finished()


class GuardedSockSite(web.SockSite):
    """aiohttp's SockSite with every connection passing through a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.protocol_factory(server), sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)
