"""``cortex swarm …``: set up a node and watch and steer the fleet through a node's REST API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cortex_node.cli import demo, render
from cortex_node.cli.client import CliError, NodeClient
from cortex_node.config import ConfigError, default_config_path, load_settings, local_operator_token, save_swarm_section
from cortex_node.contracts import ApiPath

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Cortex Swarm: run many agent-hosting machines as one fleet.")
swarm = typer.Typer(
    add_completion=False, rich_markup_mode=None, invoke_without_command=True,
    help="Watch and steer the swarm through a node's REST API.\n\n"
    "Example: cortex swarm nodes --url http://127.0.0.1:4220",
)
app.add_typer(swarm, name="swarm")


@swarm.callback()
def overview(ctx: typer.Context) -> None:
    """With no sub-command: the overview of the sub-commands."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)

URL_HELP = "Node REST URL [default: from the config file, else http://127.0.0.1:4220]"
TOKEN_HELP = "The swarm token itself (visible in 'ps'; prefer --token-file)"
TOKEN_FILE_HELP = ("File holding the swarm token [default: CORTEX_SWARM_TOKEN(_FILE), the config file, "
                   "else the local node's operator token in its data directory]")
# the options every command that talks to a node shares
UrlOpt = Annotated[Optional[str], typer.Option("--url", help=URL_HELP)]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help=TOKEN_HELP)]
TokenFileOpt = Annotated[Optional[Path], typer.Option("--token-file", help=TOKEN_FILE_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON")]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"cortex: {message}", err=True)
    raise typer.Exit(code)


def client(url: Optional[str], token: Optional[str], token_file: Optional[Path] = None,
           config: Optional[Path] = None) -> NodeClient:
    """The token: --token, --token-file, the environment, the config file; else the operator
    token of this machine's node (its data directory as the node resolves it), and that one
    only when the URL is that node's."""
    try:
        settings = load_settings(config_path=config, flags={"token": token,
                                                            "tokenFile": str(token_file) if token_file else None})
    except ConfigError as exc:
        fail(str(exc), 2)
    explicit = url or os.environ.get("CORTEX_URL")
    base = explicit or settings.client_url
    return NodeClient(base, settings.token or local_operator_token(settings, explicit))


def call(fn, *args: Any) -> Any:
    try:
        return fn(*args)
    except CliError as exc:
        fail(str(exc), exc.exit_code)


def emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2))


def show(url: Optional[str], token: Optional[str], token_file: Optional[Path], as_json: bool, path: str,
         view: Callable[[Any], None], params: Optional[dict[str, Any]] = None) -> None:
    doc = call(client(url, token, token_file).get, path, params)
    if as_json:
        return emit_json(doc)
    view(doc)


@swarm.command("nodes", help="List the nodes the node knows, with status and resources.\n\n"
               "Example: cortex swarm nodes --json | jq '.nodes[].status'")
def nodes_cmd(url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None, as_json: JsonOpt = False) -> None:
    show(url, token, token_file, as_json, ApiPath.NODES, render.nodes_table)


@swarm.command("topology", help="Print the fleet's process tree (remote processes under their node).\n\n"
               "Example: cortex swarm topology")
def topology_cmd(url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None, as_json: JsonOpt = False) -> None:
    show(url, token, token_file, as_json, ApiPath.TOPOLOGY, render.topology_tree)


@swarm.command("report", help="Fleet resource usage over the last 24 hours, per node and in total.\n\n"
               "Example: cortex swarm report --json")
def report_cmd(url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None, as_json: JsonOpt = False) -> None:
    show(url, token, token_file, as_json, ApiPath.REPORT, render.report_table)


@swarm.command("directives", help="The directive audit trail, newest first.\n\n"
               "Example: cortex swarm directives --status failed --limit 20")
def directives_cmd(status: Optional[str] = typer.Option(None, "--status", help="pending | dispatched | completed | failed | cancelled | timed_out"),
                   limit: int = typer.Option(50, "--limit", help="At most this many rows (1-1000)"),
                   url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None, as_json: JsonOpt = False) -> None:
    show(url, token, token_file, as_json, ApiPath.DIRECTIVES, render.directives_table, {"limit": limit, "status": status or None})


@swarm.command("dispatch", help="Send a directive to a node (by id or URL) or to every live node of a group.\n\n"
               "Example: cortex swarm dispatch execute_task --target http://10.0.0.7:4220 --payload '{\"command\": [\"uptime\"]}'")
def dispatch_cmd(kind: str = typer.Argument(..., help="spawn_agent | execute_task | query_resources | forward_message | sync_state"),
                 target: Optional[str] = typer.Option(None, "--target", help="Target node id, or its URL"),
                 group: Optional[str] = typer.Option(None, "--group", help="Send to every live node of this group"),
                 payload: str = typer.Option("{}", "--payload", help="The directive's payload as a JSON object"),
                 priority: str = typer.Option("normal", "--priority", help="low | normal | high | critical"),
                 ttl: float = typer.Option(120.0, "--ttl", help="Seconds the directive may take"),
                 wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the result (default) or return at once"),
                 url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None,
                 as_json: JsonOpt = False) -> None:
    if (target is None) == (group is None):
        fail("name exactly one of --target or --group", 2)
    try:
        payload_doc = json.loads(payload)
    except ValueError as exc:
        fail(f"--payload is not valid JSON ({exc.msg} at column {exc.colno})", 2)
    if not isinstance(payload_doc, dict):
        fail("--payload must be a JSON object, e.g. '{\"command\": [\"uptime\"]}'", 2)
    if not 0 < ttl <= 86_400:
        fail("--ttl must be more than 0 and at most 86400 seconds", 2)
    body: dict[str, Any] = {"kind": kind, "payload": payload_doc, "priority": priority, "ttlMs": int(ttl * 1000),
                            "wait": wait}
    if group is not None:
        body["group"] = group
    elif target.startswith(("http://", "https://")):
        body["targetEndpoint"] = target
    else:
        body["targetNodeId"] = target
    c = client(url, token, token_file)
    c.timeout = ttl + 10
    if wait:
        typer.echo(f"dispatching {kind}; waiting up to {ttl:g} s for the result…", err=True)
    doc = call(c.post, ApiPath.DIRECTIVES, body)
    if as_json:
        return emit_json(doc)
    rows = doc["directives"] if "directives" in doc and "group" in doc else [doc]
    render.directive_results(rows)
    if any(r["status"] in ("failed", "timed_out", "cancelled") for r in rows):
        raise typer.Exit(1)


def _control(action: str, url: Optional[str], token: Optional[str], token_file: Optional[Path], reason: str,
             as_json: bool, node: Optional[str] = None, deadline: Optional[float] = None) -> None:
    body: dict[str, Any] = {"reason": reason}
    if deadline is not None:
        body["deadlineSeconds"] = deadline
    doc = call(client(url, token, token_file).post, ApiPath.control(action, node or None), body)
    if as_json:
        return emit_json(doc)
    render.control_result(action, doc)


NODE_HELP = "Act on this node (id) through the node at --url [default: the node at --url itself]"


@swarm.command("drain", help="Drain a node: it takes no new work and finishes what it has.\n\n"
               "Example: cortex swarm drain --node node_mwx2k1_ab3cd --deadline 300 --reason 'kernel upgrade'")
def drain_cmd(node: Optional[str] = typer.Option(None, "--node", help=NODE_HELP),
              deadline: Optional[float] = typer.Option(None, "--deadline", help="Cancel what still runs after this many seconds"),
              url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None,
              reason: str = typer.Option("operator", "--reason", help="Recorded in the node's events"),
              as_json: JsonOpt = False) -> None:
    _control("drain", url, token, token_file, reason, as_json, node, deadline)


@swarm.command("undrain", help="Let a drained node take work again.\n\nExample: cortex swarm undrain")
def undrain_cmd(node: Optional[str] = typer.Option(None, "--node", help=NODE_HELP),
                url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None,
                reason: str = typer.Option("operator", "--reason", help="Recorded in the node's events"),
                as_json: JsonOpt = False) -> None:
    _control("undrain", url, token, token_file, reason, as_json, node)


@swarm.command("seal", help="Seal the node: stop its heartbeat, finish in-flight work, and stop the daemon (exit 0).\n\n"
               "Example: cortex swarm seal --url http://127.0.0.1:4221")
def seal_cmd(node: Optional[str] = typer.Option(None, "--node", help=NODE_HELP),
             url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None,
             reason: str = typer.Option("operator", "--reason", help="Recorded in the node's events"),
             as_json: JsonOpt = False) -> None:
    _control("seal", url, token, token_file, reason, as_json, node)


@swarm.command("forget", help="Forget a peer: drop its row, series, usage and history on the node at --url "
               "(it is registered again if it beats again). Silent peers are forgotten by themselves after "
               "forgetAfterMs (24 h).\n\nExample: cortex swarm forget node_mwx2k1_ab3cd")
def forget_cmd(node: str = typer.Argument(..., help="The id of the node to forget (see cortex swarm nodes)"),
               url: UrlOpt = None, token: TokenOpt = None, token_file: TokenFileOpt = None,
               as_json: JsonOpt = False) -> None:
    doc = call(client(url, token, token_file).post, ApiPath.NODE_FORGET(node_id=node), None)
    if as_json:
        return emit_json(doc)
    typer.echo(f"forgot {doc['forgotten']}")


@swarm.command("init", help="Save this machine's node settings to the config file and start the node.\n\n"
               "Example: cortex swarm init --name edge-1 --port 4220 --detach")
def init_cmd(name: Optional[str] = typer.Option(None, "--name", help="Node name (asked for on a terminal; default: host name)"),
             host: Optional[str] = typer.Option(None, "--host", help="Address to bind [default: 127.0.0.1]"),
             port: Optional[int] = typer.Option(None, "--port", help="Port [default: 4220]"),
             group: Optional[str] = typer.Option(None, "--group", help="Group name [default: default]"),
             tier: Optional[str] = typer.Option(None, "--tier", help="root | sudo | unprivileged"),
             detach: bool = typer.Option(False, "--detach", help="Run in the background (pid and log file in the data directory)"),
             config: Optional[Path] = typer.Option(None, "--config", help="Config file [default: $CORTEX_HOME/config.json]"),
             as_json: bool = typer.Option(False, "--json", help="Print the result as JSON")) -> None:
    path = (config or default_config_path()).expanduser()
    if name is None:
        default = socket.gethostname() or "cortex-node"
        name = typer.prompt("Node name", default=default) if sys.stdin.isatty() else default
    updates = {"name": name, "host": host, "port": port, "group": group, "tier": tier}
    try:
        # validate the merged result before anything is written
        load_settings(config_path=path, env={}, flags=updates)
        save_swarm_section(path, updates)
        settings = load_settings(config_path=path)
    except ConfigError as exc:
        fail(str(exc), 2)
    cmd = [sys.executable, "-m", "cortex_node.cli.node", "--config", str(path)]
    if not detach:
        typer.echo(f"saved {path}; starting {name} on {settings.client_url} (Ctrl-C seals it)", err=True)
        os.execv(sys.executable, cmd)
    data_dir = settings.data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path, pid_path = data_dir / "node.log", data_dir / "node.pid"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pid_path.write_text(f"{proc.pid}\n")
    c = NodeClient(settings.client_url, settings.token, timeout=2)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            fail(f"the node exited at start (code {proc.returncode}): {tail[0]}")
        try:
            health = c.get(ApiPath.HEALTH)
            break
        except CliError:
            time.sleep(0.1)
    else:
        fail(f"the node did not answer within 15 s; see {log_path}")
    result = {"nodeId": health["nodeId"], "name": health["name"], "url": settings.client_url, "pid": proc.pid,
              "config": str(path), "log": str(log_path), "pidFile": str(pid_path)}
    if as_json:
        return emit_json(result)
    typer.echo(f"{name} ({health['nodeId']}) is running on {settings.client_url}, pid {proc.pid}")
    typer.echo(f"log: {log_path}   stop it with: cortex swarm seal --url {settings.client_url}")


@swarm.command("demo", help="Start a local swarm with a light simulated workload and open cortex-tui on node 1; "
               "every node is sealed on exit.\n\nExample: cortex swarm demo --nodes 4")
def demo_cmd(nodes: int = typer.Option(3, "--nodes", help="How many local nodes (1-16)"),
             tui: bool = typer.Option(True, "--tui/--no-tui", help="Open cortex-tui (default) or just run"),
             data_dir: Path = typer.Option(Path(".cortex-demo"), "--data-dir", help="Where the nodes keep their data (wiped first)"),
             interval: float = typer.Option(1.0, "--heartbeat-interval", help="Seconds between heartbeats"),
             duration: Optional[float] = typer.Option(None, "--duration", help="With --no-tui: stop after this many seconds")) -> None:
    if not 1 <= nodes <= 16:
        fail("--nodes must be from 1 to 16", 2)
    if not 0.1 <= interval <= 60:
        fail("--heartbeat-interval must be from 0.1 to 60 seconds", 2)
    try:
        code = demo.run_demo(nodes, tui, data_dir.resolve(), interval, duration)
    except CliError as exc:
        fail(str(exc), exc.exit_code)
    raise typer.Exit(code)


def main() -> None:
    app(prog_name="cortex")


if __name__ == "__main__":
    main()
