"""A small synchronous REST client for the CLI (startup time matters more than concurrency here).
Every failure becomes a ``CliError`` with one line for the operator."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cortex_node.contracts import error_line


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NodeClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        """``path`` from ``contracts.ApiPath``; ``params`` (None values left out) become the query."""
        data = json.dumps(body).encode() if body is not None else None
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        req = urllib.request.Request(self.base_url + path + (f"?{query}" if query else ""), data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(error_line(exc.code, _error_body(exc), f"the node at {self.base_url}")) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError) or "refused" in str(reason).lower():
                raise CliError(
                    f"no cortex-node is answering at {self.base_url}; start one with 'cortex-node' "
                    "or 'cortex swarm init --detach' (or pass --url)"
                ) from None
            raise CliError(f"cannot reach {self.base_url}: {reason}") from None
        except (socket.timeout, TimeoutError):
            raise CliError(f"{self.base_url} did not answer within {self.timeout:.0f} s") from None
        except ConnectionError as exc:
            raise CliError(f"connection to {self.base_url} failed: {exc}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(f"{self.base_url}{path} answered with something that is not JSON; is it a cortex-node?") from None

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})


def _error_body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except OSError:  # the connection broke while the error body came in
        return b""
