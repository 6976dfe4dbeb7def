"""HTTP plumbing shared by every route: the JSON error shape, bearer auth, query parsing."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from cortex_node import jsonfast
from cortex_node.contracts import to_wire
from cortex_node.store.db import StoreError

log = logging.getLogger("cortex.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 1024 * 1024  # larger request bodies get a 413

# Routes anyone may read: the A2A agent card (spec §8), liveness and the API description.
PUBLIC_PREFIXES = ("/.well-known/", "/healthz", "/openapi.json")

_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 429: "too_many_requests",
    500: "internal", 503: "unavailable",
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


def make_auth_middleware(token: str | None) -> Callable:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        # constant-time compare: the token must not leak through timing either
        if not hmac.compare_digest(given, expected):
            resp = error_body(401, "missing or wrong swarm token: send 'Authorization: Bearer <token>'")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="cortex-swarm"'
            return resp
        return await handler(request)

    return auth


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
            message = f"no route {request.method} {request.path}; see GET /openapi.json"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
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
        raise ApiError(400, f"query parameter '{name}' must be an integer from {lo} to {hi}; got {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter '{name}' must be an integer from {lo} to {hi}; got {value}")
    return value


def query_enum(request: web.Request, name: str, enum_cls: Any) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return enum_cls(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ApiError(400, f"query parameter '{name}' must be one of {allowed}; got {raw!r}") from None


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
MAX_TRACKED_CLIENTS = 10_000


class TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


def make_rate_limit_middleware(rate_per_s: float, burst: float, monotonic: Callable[[], float]) -> Callable:
    """A token bucket per client address; an empty bucket answers 429 with Retry-After."""
    buckets: dict[str, TokenBucket] = {}

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(RATE_EXEMPT_PATHS):
            return await handler(request)
        client = request.remote or "unknown"
        now = monotonic()
        bucket = buckets.get(client)
        if bucket is None:
            if len(buckets) >= MAX_TRACKED_CLIENTS:
                buckets.pop(next(iter(buckets)))  # the oldest client first: memory stays bounded
            bucket = buckets[client] = TokenBucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate_per_s)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return await handler(request)
        if request.path == "/a2a" and await _is_membership_call(request):
            return await handler(request)
        wait_s = max(1, int((1 - bucket.tokens) / rate_per_s + 0.999))
        resp = error_body(429, f"too many requests from {client}: the limit is {rate_per_s:g} per second "
                               f"(burst {burst:g}); retry in {wait_s} s")
        resp.headers["Retry-After"] = str(wait_s)
        return resp

    return rate_limit


async def _is_membership_call(request: web.Request) -> bool:
    """Only looked at when a client is over its limit (the body is cached for the handler)."""
    try:
        doc = json.loads(await request.read())
    except (ValueError, RecursionError, web.HTTPException):
        return False
    return isinstance(doc, dict) and doc.get("method") in RATE_EXEMPT_METHODS
