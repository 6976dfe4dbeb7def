"""Node settings: ``$CORTEX_HOME/config.json`` (default ``~/.cortex``), environment, flags.

Precedence: flag > environment > file > default. Every problem becomes one ``ConfigError``
line naming the source, the key and what is allowed: callers print it, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from cortex_node.contracts import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HEARTBEAT_INTERVAL_MS,
    NODE_STALE_MS,
    NodeTier,
)


class ConfigError(Exception):
    """One clear line: where, which key, what is allowed."""


@dataclass(frozen=True)
class NodeSettings:
    name: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    advertise_url: str | None = None
    data_dir: Path = Path("~/.cortex/swarm")
    group: str = "default"
    tier: NodeTier = NodeTier.ROOT
    seed_nodes: tuple[str, ...] = ()
    token: str | None = None
    enabled: bool = True
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    stale_after_ms: int = NODE_STALE_MS
    log_level: str = "info"
    labels: dict[str, str] = field(default_factory=dict)
    agents: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    allowed_commands: tuple[str, ...] = ()
    max_workers: int = 8
    rate_limit_per_s: float = 1000.0  # per client address; 0 turns the limit off
    config_path: Path | None = None

    @property
    def public_url(self) -> str:
        """The base URL peers use: --advertise-url, else host:port (a wildcard bind advertises
        the machine's host name, never 0.0.0.0)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn() or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def client_url(self) -> str:
        """Where a CLI on this machine reaches the node."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def cortex_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    home = env.get("CORTEX_HOME")
    return Path(home).expanduser() if home else Path("~/.cortex").expanduser()


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    return cortex_home(env) / "config.json"


# --- value checks: each returns the clean value or raises ValueError("what is allowed") ----------
def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("a non-empty string")
    return v.strip()


def _name(v: Any) -> str:
    v = _str(v)
    if len(v) > 64 or any(c in v for c in "\n\r\t"):
        raise ValueError("a name of at most 64 characters without tabs or newlines")
    return v


def _port(v: Any) -> int:
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
        raise ValueError("an integer port from 0 to 65535 (0 picks a free port)")
    return v


def _positive_ms(minimum: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ValueError(f"a number of milliseconds >= {minimum}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < minimum:
            raise ValueError(f"a number of milliseconds >= {minimum}")
        return int(v)

    return check


def _tier(v: Any) -> NodeTier:
    try:
        return NodeTier(v)
    except ValueError:
        raise ValueError("one of root, sudo, unprivileged") from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.lower() in ("1", "true", "yes", "on")
    raise ValueError("true or false")


def _url(v: Any) -> str:
    v = _str(v)
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http(s) URL such as http://10.0.0.5:4220")
    try:
        parts.port
    except ValueError:
        raise ValueError("an http(s) URL with a valid port") from None
    return v.rstrip("/")


def _urls(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [p for p in v.split(",") if p.strip()]
    if not isinstance(v, (list, tuple)):
        raise ValueError("a list of http(s) URLs")
    return tuple(_url(x) for x in v)


def _strs(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("a list of non-empty strings")
    return tuple(v)


def _str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ValueError("an object of string values")
    return dict(v)


def _obj(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError("an object")
    return dict(v)


def _path(v: Any) -> Path:
    return Path(_str(v)).expanduser()


def _log_level(v: Any) -> str:
    v = _str(v).lower()
    if v not in ("debug", "info", "warning", "error"):
        raise ValueError("one of debug, info, warning, error")
    return v


def _workers(v: Any) -> int:
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 256:
        raise ValueError("an integer from 1 to 256")
    return v


def _rate(v: Any) -> float:
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ValueError("a number of requests per second >= 0 (0 turns the limit off)") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or v > 1e9:
        raise ValueError("a number of requests per second >= 0 (0 turns the limit off)")
    return float(v)


# config key -> (settings field, check, environment variable)
KEYS: dict[str, tuple[str, Callable[[Any], Any], str | None]] = {
    "name": ("name", _name, "CORTEX_SWARM_NAME"),
    "host": ("host", _str, "CORTEX_SWARM_HOST"),
    "port": ("port", _port, "CORTEX_SWARM_PORT"),
    "advertiseUrl": ("advertise_url", _url, "CORTEX_SWARM_ADVERTISE_URL"),
    "dataDir": ("data_dir", _path, "CORTEX_SWARM_DATA_DIR"),
    "group": ("group", _name, "CORTEX_SWARM_GROUP"),
    "tier": ("tier", _tier, "CORTEX_SWARM_TIER"),
    "seedNodes": ("seed_nodes", _urls, "CORTEX_SWARM_SEEDS"),
    "token": ("token", _str, "CORTEX_SWARM_TOKEN"),
    "enabled": ("enabled", _bool, "CORTEX_SWARM_ENABLED"),
    "heartbeatIntervalMs": ("heartbeat_interval_ms", _positive_ms(50), "CORTEX_SWARM_HEARTBEAT_INTERVAL_MS"),
    "staleAfterMs": ("stale_after_ms", _positive_ms(100), "CORTEX_SWARM_STALE_AFTER_MS"),
    "logLevel": ("log_level", _log_level, "CORTEX_SWARM_LOG_LEVEL"),
    "labels": ("labels", _str_map, None),
    "agents": ("agents", _obj, None),
    "tools": ("tools", _obj, None),
    "allowedCommands": ("allowed_commands", _strs, None),
    "maxWorkers": ("max_workers", _workers, "CORTEX_SWARM_MAX_WORKERS"),
    "rateLimitPerSecond": ("rate_limit_per_s", _rate, "CORTEX_SWARM_RATE_LIMIT"),
}


def read_config_file(path: Path) -> dict[str, Any]:
    """The whole JSON document ({} when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"{path}: not valid JSON{where}; fix or remove the file") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object with a \"swarm\" section")
    swarm = doc.get("swarm", {})
    if not isinstance(swarm, dict):
        raise ConfigError(f"{path}: key \"swarm\" must be an object")
    return doc


def load_settings(
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> NodeSettings:
    """Merge default < file < environment < flags. ``flags`` uses the config keys (camelCase);
    a value of None means "not given"."""
    env = os.environ if env is None else env
    path = Path(config_path).expanduser() if config_path else default_config_path(env)
    section = read_config_file(path).get("swarm", {})
    values: dict[str, Any] = {}

    for key, raw in section.items():
        if key not in KEYS:
            allowed = ", ".join(sorted(KEYS))
            raise ConfigError(f"{path}: unknown key \"swarm.{key}\"; allowed keys: {allowed}")
        attr, check, _ = KEYS[key]
        try:
            values[attr] = check(raw)
        except ValueError as exc:
            shown = "(hidden)" if key == "token" else repr(raw)
            raise ConfigError(f"{path}: \"swarm.{key}\" is {shown}; it must be {exc}") from None

    for key, (attr, check, var) in KEYS.items():
        if var and env.get(var, "") != "":
            try:
                values[attr] = check(env[var])
            except ValueError as exc:
                shown = "(hidden)" if key == "token" else repr(env[var])
                raise ConfigError(f"environment {var} is {shown}; it must be {exc}") from None

    for key, raw in (flags or {}).items():
        if raw is None or (isinstance(raw, (list, tuple)) and not raw):
            continue
        attr, check, _ = KEYS[key]
        try:
            values[attr] = check(raw)
        except ValueError as exc:
            shown = "(hidden)" if key == "token" else repr(raw)
            flag = "--" + "".join("-" + c.lower() if c.isupper() else c for c in key)
            raise ConfigError(f"option {flag} is {shown}; it must be {exc}") from None

    values.setdefault("name", socket.gethostname() or "cortex-node")
    values.setdefault("data_dir", cortex_home(env) / "swarm")
    settings = NodeSettings(config_path=path, **values)
    if settings.stale_after_ms <= settings.heartbeat_interval_ms:
        raise ConfigError(
            f"staleAfterMs ({settings.stale_after_ms}) must be larger than heartbeatIntervalMs "
            f"({settings.heartbeat_interval_ms}), or every peer would be marked disconnected between heartbeats"
        )
    return settings


def check_bind_policy(settings: NodeSettings) -> None:
    """DESIGN §7: a node reachable from other machines must have the swarm token."""
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"refusing to listen on {settings.host} without a swarm token: set --token, "
            "CORTEX_SWARM_TOKEN or swarm.token (or bind 127.0.0.1)"
        )


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def save_swarm_section(path: Path, updates: Mapping[str, Any]) -> None:
    """Merge ``updates`` into the file's swarm section, atomically. A malformed existing file is
    an error, never silently overwritten."""
    doc = read_config_file(path)
    section = dict(doc.get("swarm", {}))
    for key, value in updates.items():
        if key not in KEYS:
            raise ConfigError(f"unknown key \"swarm.{key}\"")
        if value is not None:
            section[key] = value
    doc["swarm"] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
