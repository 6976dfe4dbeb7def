"""Where the dashboard connects by default: the same config file the node reads.

cortex_tui may not import cortex_node.config (DESIGN §2), so this reads the few keys it needs
itself: ``$CORTEX_HOME/config.json`` (default ``~/.cortex``), section "swarm": host, port, token;
``CORTEX_SWARM_TOKEN`` overrides the file's token, flags override both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from cortex_node.contracts import DEFAULT_HOST, DEFAULT_PORT


class ConfigProblem(Exception):
    """The config file exists but cannot be used; the message names the file."""


def config_path(env: Mapping[str, str]) -> Path:
    home = env.get("CORTEX_HOME")
    return (Path(home) if home else Path("~/.cortex")).expanduser() / "config.json"


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


def resolve_connection(url: str | None, token: str | None,
                       env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(base URL, token) from flags > environment > config file > defaults."""
    env = os.environ if env is None else env
    section = _swarm_section(config_path(env)) if url is None or token is None else {}
    if url is None:
        host = section.get("host") if isinstance(section.get("host"), str) else DEFAULT_HOST
        if host in ("0.0.0.0", "::", ""):  # a wildcard bind is reached through loopback
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = section.get("port")
        port = port if isinstance(port, int) and not isinstance(port, bool) and port > 0 else DEFAULT_PORT
        url = f"http://{host}:{port}"
    if token is None:
        file_token = section.get("token") if isinstance(section.get("token"), str) else None
        token = env.get("CORTEX_SWARM_TOKEN") or file_token
    return url.rstrip("/"), token or None
