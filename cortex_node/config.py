"""Node settings: ``$CORTEX_HOME/config.json`` (default ``~/.cortex``), environment, flags.

Precedence: flag > environment > file > default. Every problem becomes one ``ConfigError``
line naming the source, the key and what is allowed: callers print it, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import stat
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from cortex_node.contracts import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    FORGET_AFTER_MS,
    HEARTBEAT_INTERVAL_MS,
    MAX_NODES,
    MAX_QUEUED,
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
    allowed_env: tuple[str, ...] = ()  # more environment names directives may set below root (kernel/policy.py)
    max_agents: int = 64  # live agents, attached and detached together (kernel/agents.py MAX_AGENTS)
    max_workers: int = 8
    max_queued: int = MAX_QUEUED  # directives waiting for a worker (swarm/work_queue.py)
    max_nodes: int = MAX_NODES  # nodes in the registry (swarm/node_registry.py)
    forget_after_ms: int = FORGET_AFTER_MS  # a peer silent this long is forgotten
    rate_limit_per_s: float = 1000.0  # per client address; 0 turns the limit off
    allowed_hosts: tuple[str, ...] = ()  # more names the node answers to (Host header); "*" = any
    max_connections_per_client: int = 256  # open connections per client address; 0 turns the cap off
    header_timeout_ms: int = 10_000  # a new connection must send its first request header within this
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


def _token_file(v: Any) -> str:
    """The token read from a file (the path is shown in errors, the content never)."""
    return read_token_file(_path(v))


def _host_names(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [p for p in v.split(",") if p.strip()]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x.strip() for x in v):
        raise ValueError("a list of host names such as [\"node-1.example.com\", \".lan\"] (\"*\" allows any)")
    names = tuple(x.strip().lower().rstrip(".") for x in v)
    if any(len(n) > 253 or any(c in n for c in " /\t\r\n@") for n in names):
        raise ValueError("a list of host names without spaces, slashes or '@'")
    return names


def _count(lo: int, hi: int, what: str) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"an integer from {lo} to {hi} ({what})")
        return v

    return check


def _env_names(v: Any) -> tuple[str, ...]:
    """Names only: the kernel refuses the ones that decide which code runs whatever is listed."""
    if not isinstance(v, (list, tuple)) or not all(
            isinstance(x, str) and x and (x[0].isalpha() or x[0] == "_") and all(c.isalnum() or c == "_" for c in x)
            and x.isascii() for x in v):
        raise ValueError("a list of environment variable names (letters, digits, _) that directives may set "
                         "below root")
    return tuple(v)


def _max_agents(v: Any) -> int:
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
        raise ValueError("an integer from 1 to 4096 (live agents, attached and detached together)")
    return v


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
    "tokenFile": ("token", _token_file, "CORTEX_SWARM_TOKEN_FILE"),
    "enabled": ("enabled", _bool, "CORTEX_SWARM_ENABLED"),
    "heartbeatIntervalMs": ("heartbeat_interval_ms", _positive_ms(50), "CORTEX_SWARM_HEARTBEAT_INTERVAL_MS"),
    "staleAfterMs": ("stale_after_ms", _positive_ms(100), "CORTEX_SWARM_STALE_AFTER_MS"),
    "logLevel": ("log_level", _log_level, "CORTEX_SWARM_LOG_LEVEL"),
    "labels": ("labels", _str_map, None),
    "agents": ("agents", _obj, None),
    "tools": ("tools", _obj, None),
    "allowedCommands": ("allowed_commands", _strs, None),
    "allowedEnv": ("allowed_env", _env_names, None),
    "maxAgents": ("max_agents", _max_agents, "CORTEX_SWARM_MAX_AGENTS"),
    "maxWorkers": ("max_workers", _workers, "CORTEX_SWARM_MAX_WORKERS"),
    "maxQueued": ("max_queued", _count(1, 4000, "directives waiting for a worker"), "CORTEX_SWARM_MAX_QUEUED"),
    "maxNodes": ("max_nodes", _count(2, 1_000_000, "nodes in the registry"), "CORTEX_SWARM_MAX_NODES"),
    "forgetAfterMs": ("forget_after_ms", _count(1000, 3650 * 86_400_000, "milliseconds"),
                      "CORTEX_SWARM_FORGET_AFTER_MS"),
    "rateLimitPerSecond": ("rate_limit_per_s", _rate, "CORTEX_SWARM_RATE_LIMIT"),
    "allowedHosts": ("allowed_hosts", _host_names, "CORTEX_SWARM_ALLOWED_HOSTS"),
    "maxConnectionsPerClient": ("max_connections_per_client", _count(0, 100_000, "0 turns the cap off"),
                                "CORTEX_SWARM_MAX_CONNECTIONS_PER_CLIENT"),
    "headerTimeoutMs": ("header_timeout_ms", _count(100, 600_000, "milliseconds"), "CORTEX_SWARM_HEADER_TIMEOUT_MS"),
}
TOKEN_KEYS = ("token", "tokenFile")  # two ways to give one secret: never both from one source


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

    if all(k in section for k in TOKEN_KEYS):
        raise ConfigError(f"{path}: give either \"swarm.token\" or \"swarm.tokenFile\", not both")
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

    given_env = [KEYS[k][2] for k in TOKEN_KEYS if env.get(KEYS[k][2] or "", "") != ""]
    if len(given_env) == 2:
        raise ConfigError(f"environment: give either {given_env[0]} or {given_env[1]}, not both")
    for key, (attr, check, var) in KEYS.items():
        if var and env.get(var, "") != "":
            try:
                values[attr] = check(env[var])
            except ValueError as exc:
                shown = "(hidden)" if key == "token" else repr(env[var])
                raise ConfigError(f"environment {var} is {shown}; it must be {exc}") from None

    flags = {k: v for k, v in (flags or {}).items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    if all(k in flags for k in TOKEN_KEYS):
        raise ConfigError("give either --token or --token-file, not both")
    for key, raw in flags.items():
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
    """DESIGN §7: a node reachable from other machines must have the swarm token (a configured
    one: the operator token a loopback node makes for itself is not shared with any peer)."""
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"refusing to listen on {settings.host} without a swarm token: set --token-file, "
            "CORTEX_SWARM_TOKEN_FILE or swarm.tokenFile (or --token, CORTEX_SWARM_TOKEN, swarm.token), "
            "or bind 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """True for 'localhost' and every loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z);
    a name such as '127.example.com' is not one."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


# --- the token in a file --------------------------------------------------------------------------
OPERATOR_TOKEN_FILE = "operator_token"  # in the data directory; made by a node that has no token
MAX_TOKEN_CHARS = 4096


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped). Raises ValueError saying what is
    wrong with the file, never what is in it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN_CHARS + 1)
    except FileNotFoundError:
        raise ValueError(f"a file holding the token; {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"a readable file holding the token; cannot read {path} ({exc.strerror or exc})") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"a file holding the token as UTF-8 text; {path} is not") from None
    if not token or len(raw) > MAX_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"a file holding one token (1 to {MAX_TOKEN_CHARS} printable characters, "
                         f"no spaces); {path} does not")
    return token


def operator_token_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / OPERATOR_TOKEN_FILE


def load_or_create_operator_token(data_dir: Path) -> tuple[str, bool]:
    """The node's own token when none is configured: ``<data_dir>/operator_token``, mode 0600,
    made once (secrets.token_urlsafe(32)) and kept across restarts. Returns (token, created).
    A file that cannot be used as a token is replaced; one readable by others is made 0600.
    Raises OSError when the file cannot be read or written."""
    path = operator_token_path(data_dir)
    if path.exists():  # unreadable: the OSError says why (never replaced behind the owner's back)
        with open(path, "rb"):
            pass
        try:
            token = read_token_file(path)
        except ValueError:
            token = None  # empty or garbled (a crash while it was made): made again below
        if token is not None:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                os.chmod(path, 0o600)
            return token, False
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    with suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token, True


def local_operator_token(settings: NodeSettings, base_url: str | None) -> str | None:
    """For the CLI: the operator token of the node this machine's settings describe, but only
    when ``base_url`` is that node (None means it is): the token is never sent elsewhere."""
    if base_url is not None and not _same_node(base_url, settings):
        return None
    try:
        return read_token_file(operator_token_path(settings.data_dir))
    except ValueError:
        return None


def _same_node(base_url: str, settings: NodeSettings) -> bool:
    try:
        parts = urlsplit(base_url)
        host, port = (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    own = {settings.client_url, settings.public_url}
    try:
        info = json.loads((Path(settings.data_dir).expanduser() / "runtime.json").read_text(encoding="utf-8"))
        own |= {u for u in (info.get("url"), info.get("publicUrl")) if isinstance(u, str)}
        runtime_port = info.get("port")
    except (OSError, ValueError, AttributeError):
        runtime_port = None
    for url in own:
        p = urlsplit(url)
        if (p.hostname or "").lower() == host and (p.port or (443 if p.scheme == "https" else 80)) == port:
            return True
    # any loopback name for the node's own port (localhost vs 127.0.0.1)
    return is_loopback(host) and is_loopback(settings.host) and port in (settings.port, runtime_port)


def save_swarm_section(path: Path, updates: Mapping[str, Any]) -> None:
    """Merge ``updates`` into the file's swarm section, atomically. A malformed existing file is
    an error, never silently overwritten. The file keeps its mode; a new one is made 0600 (it
    may hold the swarm token)."""
    doc = read_config_file(path)
    section = dict(doc.get("swarm", {}))
    for key, value in updates.items():
        if key not in KEYS:
            raise ConfigError(f"unknown key \"swarm.{key}\"")
        if value is not None:
            section[key] = value
    doc["swarm"] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
    tmp = path.with_name(path.name + ".tmp")
    with suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, mode)  # exactly the old mode, whatever the umask says
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(json.dumps(doc, indent=2) + "\n")
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(tmp, path)
