"""``cortex-node``: run the daemon in the foreground. SIGTERM/SIGINT seal it (exit 0)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from cortex_node.app import StartupError, run_node
from cortex_node.config import ConfigError, NodeSettings, load_settings

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


class UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def settings_from_flags(config: Optional[Path], **flags: object) -> NodeSettings:
    """Flags use the config file's keys; None means "not given"."""
    return load_settings(config_path=config, flags=flags)


def event_loop_factory():
    """uvloop when installed: the daemon spends much of its time in the event loop itself."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def seconds_to_ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else value * 1000.0


@app.command(
    help="Run a Cortex Swarm node in the foreground until sealed (SIGTERM or SIGINT seal it).\n\n"
    "Without a token the node makes its own operator token in the data directory (file operator_token, "
    "mode 0600) and requires it; cortex swarm and cortex-tui on this machine read it from there. Nodes of "
    "one swarm share a token: give each the same --token-file.\n\n"
    "Example: cortex-node --name edge-1 --host 0.0.0.0 --seed http://10.0.0.5:4220 --token-file /etc/cortex/token",
)
def main_command(
    name: Optional[str] = typer.Option(None, "--name", help="Node name (default: host name)"),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind [default: 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, "--port", help="Port to bind, 0 for a free one [default: 4220]"),
    advertise_url: Optional[str] = typer.Option(None, "--advertise-url", help="Base URL peers should use"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Database, node id, logs [default: $CORTEX_HOME/swarm]"),
    config: Optional[Path] = typer.Option(None, "--config", help="Config file [default: $CORTEX_HOME/config.json]"),
    group: Optional[str] = typer.Option(None, "--group", help="Group name for broadcasts [default: default]"),
    tier: Optional[str] = typer.Option(None, "--tier", help="root | sudo | unprivileged [default: root]"),
    seed: Optional[list[str]] = typer.Option(None, "--seed", help="A peer's URL to join through (repeatable)"),
    token_file: Optional[Path] = typer.Option(
        None, "--token-file", help="File holding the swarm token (recommended; or CORTEX_SWARM_TOKEN_FILE) "
        "[default: the node's own operator token in the data directory]"),
    token: Optional[str] = typer.Option(
        None, "--token", help="The swarm token itself: visible to every user in 'ps'; prefer --token-file "
        "(or CORTEX_SWARM_TOKEN)"),
    heartbeat_interval: Optional[float] = typer.Option(None, "--heartbeat-interval", help="Seconds [default: 30]"),
    stale_after: Optional[float] = typer.Option(None, "--stale-after", help="Seconds without heartbeat before disconnected [default: 120]"),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="debug | info | warning | error"),
) -> None:
    try:
        settings = settings_from_flags(
            config, name=name, host=host, port=port, advertiseUrl=advertise_url,
            dataDir=str(data_dir) if data_dir else None, group=group, tier=tier, seedNodes=seed, token=token,
            tokenFile=str(token_file) if token_file else None,
            heartbeatIntervalMs=seconds_to_ms(heartbeat_interval), staleAfterMs=seconds_to_ms(stale_after),
            logLevel=log_level,
        )
    except ConfigError as exc:
        typer.echo(f"cortex-node: {exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            code = runner.run(run_node(settings))
    except (StartupError, ConfigError) as exc:
        typer.echo(f"cortex-node: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        code = 130
    raise typer.Exit(code)


def main() -> None:
    app(prog_name="cortex-node")


if __name__ == "__main__":
    main()
