"""Where the dashboard connects by default: the same config file the node reads.

cortex_tui may not import cortex_node.config (DESIGN §2), so this reads the few keys it needs
itself: ``$CORTEX_HOME/config.json`` (default ``~/.cortex``), section "swarm": host, port,
token, tokenFile, dataDir. The token, first found wins: the flag, ``CORTEX_SWARM_TOKEN``,
``CORTEX_SWARM_TOKEN_FILE``, the file's ``token``, its ``tokenFile``, and last the operator token
a node without a configured token makes for itself (``<data dir>/operator_token``, the data
directory resolved as the node does: ``CORTEX_SWARM_DATA_DIR``, ``dataDir``, ``$CORTEX_HOME/swarm``).
That last one is used only for the local node's own URL (no --url, or --url naming it), so it is
never sent anywhere else.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from cortex_node.contracts import DEFAULT_HOST, DEFAULT_PORT

OPERATOR_TOKEN_FILE = "operator_token"  # as cortex_node.config names it
MAX_TOKEN_BYTES = 4096


class ConfigProblem(Exception):
    """The config file exists but cannot be used; the message names the file."""


def cortex_home(env: Mapping[str, str]) -> Path:
    home = env.get("CORTEX_HOME")
    return (Path(home) if home else Path("~/.cortex")).expanduser()


def config_path(env: Mapping[str, str]) -> Path:
    return cortex_home(env) / "config.json"


def _swarm_section(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigProblem(f"{path}: cannot read the config file ({exc.strerror})") from None
    except ValueError:
        raise ConfigProblem(f"{path}: not valid JSON; fix it or pass --url and --token") from None
    section = doc.get("swarm", {}) if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise ConfigProblem(f"{path}: expected an object with a \"swarm\" section")
    return section


def read_token_file(path: Path, where: str) -> str:
    """The token in a file; the problem names the file and ``where`` it was named, never its content."""
    try:
        with open(path.expanduser(), "rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigProblem(f"{where}: cannot read the token file {path} ({exc.strerror or exc})") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = ""
    if not token or len(raw) > MAX_TOKEN_BYTES or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigProblem(f"{where}: the token file {path} does not hold one token")
    return token


def _local_host_port(section: dict[str, Any]) -> tuple[str, int]:
    host = section.get("host") if isinstance(section.get("host"), str) else DEFAULT_HOST
    if host in ("0.0.0.0", "::", ""):  # a wildcard bind is reached through loopback
        host = "127.0.0.1"
    port = section.get("port")
    port = port if isinstance(port, int) and not isinstance(port, bool) and port > 0 else DEFAULT_PORT
    return host, port


def _data_dir(section: dict[str, Any], env: Mapping[str, str]) -> Path:
    configured = env.get("CORTEX_SWARM_DATA_DIR") or section.get("dataDir")
    if isinstance(configured, str) and configured.strip():
        return Path(configured.strip()).expanduser()
    return cortex_home(env) / "swarm"


def _is_loopback_name(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_local_node(url: str, section: dict[str, Any], data_dir: Path) -> bool:
    """Is ``url`` the node this machine's config describes (its URL, or the one it wrote in its
    runtime file)?"""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    own_host, own_port = _local_host_port(section)
    ports = {own_port}
    try:
        info = json.loads((data_dir / "runtime.json").read_text(encoding="utf-8"))
        for key in ("url", "publicUrl"):
            if isinstance(info.get(key), str):
                p = urlsplit(info[key])
                if (p.hostname or "").lower() == host and p.port == port:
                    return True
        if isinstance(info.get("port"), int):
            ports.add(info["port"])
    except (OSError, ValueError, AttributeError):
        pass
    if host == own_host.strip("[]").lower() and port in ports:
        return True
    return _is_loopback_name(host) and _is_loopback_name(own_host) and port in ports


def resolve_connection(url: str | None, token: str | None,
                       env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(base URL, token) from flags > environment > config file > the local node's operator token."""
    env = os.environ if env is None else env
    path = config_path(env)
    section = _swarm_section(path) if url is None or token is None else {}
    explicit_url = url
    if url is None:
        host, port = _local_host_port(section)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        url = f"http://{host}:{port}"
    if token is None:
        file_token = section.get("token") if isinstance(section.get("token"), str) else None
        token_file = section.get("tokenFile") if isinstance(section.get("tokenFile"), str) else None
        if env.get("CORTEX_SWARM_TOKEN"):
            token = env["CORTEX_SWARM_TOKEN"]
        elif env.get("CORTEX_SWARM_TOKEN_FILE"):
            token = read_token_file(Path(env["CORTEX_SWARM_TOKEN_FILE"]), "CORTEX_SWARM_TOKEN_FILE")
        elif file_token:
            token = file_token
        elif token_file:
            token = read_token_file(Path(token_file), f"{path} (swarm.tokenFile)")
        else:
            data_dir = _data_dir(section, env)
            if explicit_url is None or _is_local_node(explicit_url, section, data_dir):
                try:
                    token = read_token_file(data_dir / OPERATOR_TOKEN_FILE, "operator token")
                except ConfigProblem:
                    token = None  # no local node (yet), or not ours to read: go without
    return url.rstrip("/"), token or None
