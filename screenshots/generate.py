"""Regenerates the screenshots of cortex-tui against a real local swarm (`make screenshots`).

Three nodes on loopback with a workload (sim agents spawned across nodes, so node 1's tree has
remote PIDs >= 900000), then the app runs headless and saves an SVG of each screen; rsvg-convert
turns them into PNGs (it keeps the monospace grid, cairosvg does not).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cortex_node.cli.client import NodeClient
from cortex_node.cli.demo import Workload, seal_all, start_nodes
from cortex_tui.app import CortexTui
from cortex_tui.client.rest import SwarmClient
from cortex_tui.widgets.connection_banner import ConnectionBanner

OUT = Path(__file__).resolve().parent
SIZE = (140, 42)
SHOTS = ("fleet", "node-detail", "directives", "drain-confirm", "disconnected")


def log(message: str) -> None:
    print(f"screenshots: {message}", file=sys.stderr, flush=True)


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


def seed_work(nodes, token: str) -> None:
    """Long-running sim agents from node 1 on the others, so the tree shows them running."""
    first = NodeClient(nodes[0].url, token)
    for target in nodes[1:]:
        target_id = NodeClient(target.url, token).get("/healthz")["nodeId"]
        for instruction in ("index the repository", "review pull request 17"):
            first.post("/api/swarm/directives", {
                "targetNodeId": target_id, "kind": "spawn_agent",
                "payload": {"agentType": "sim", "instruction": instruction, "detach": True,
                            "env": {"CORTEX_SIM_SECONDS": "120"}}})
        first.post("/api/swarm/directives", {"targetNodeId": target_id, "kind": "execute_task",
                                             "payload": {"command": ["uname", "-a"]}})


async def until(pilot, predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("screenshots: the app did not reach the expected state")
        await pilot.pause(0.2)


async def shoot(nodes, token: str, svg_dir: Path) -> None:
    app = CortexTui(SwarmClient(nodes[0].url, token), interval_s=1.0, stale_after_ms=6_000)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: app.fleet is not None and len(app.fleet.nodes) == len(nodes)
                    and any(p.pid >= 900_000 for p in app.fleet.processes))
        await pilot.pause(3.0)  # a few refreshes: the sparklines fill
        app.save_screenshot(path=str(svg_dir), filename="fleet.svg")
        await pilot.press("enter")
        await pilot.pause(3.0)
        app.save_screenshot(path=str(svg_dir), filename="node-detail.svg")
        await pilot.press("escape")
        await pilot.press("2")
        await pilot.pause(2.5)
        app.save_screenshot(path=str(svg_dir), filename="directives.svg")
        await pilot.press("1")
        await pilot.pause(0.5)
        await pilot.press("down", "d")
        await pilot.pause(0.5)
        app.save_screenshot(path=str(svg_dir), filename="drain-confirm.svg")
        await pilot.press("escape")
        nodes[0].proc.kill()
        await until(pilot, lambda: any(b.has_class("-visible") for b in app.screen.query(ConnectionBanner)))
        await pilot.pause(1.0)
        app.save_screenshot(path=str(svg_dir), filename="disconnected.svg")


def main() -> int:
    if shutil.which("rsvg-convert") is None:
        raise SystemExit("screenshots: rsvg-convert is missing (Debian package librsvg2-bin)")
    root = Path(tempfile.mkdtemp(prefix="cortex-shots-"))
    token = secrets.token_urlsafe(16)
    nodes = start_nodes(3, root, token, interval_s=0.5)
    workload = Workload(nodes, token, seed=7)
    try:
        seed_work(nodes, token)
        workload.start()
        first = NodeClient(nodes[0].url, token)
        wait(lambda: sum(1 for p in first.get("/api/swarm/topology")["processes"] if p["pid"] >= 900_000) >= 4,
             30, "remote processes in node 1's tree")
        svg_dir = root / "svg"
        svg_dir.mkdir()
        asyncio.run(shoot(nodes, token, svg_dir))
        for name in SHOTS:
            svg = svg_dir / f"{name}.svg"
            shutil.copy(svg, OUT / f"{name}.svg")
            # rsvg drops a no-break space that opens a text run ("3/3nodes"); plain spaces with
            # xml:space="preserve" keep every column where the terminal had it
            flat = svg.read_text().replace("&#160;", " ").replace("<svg ", '<svg xml:space="preserve" ', 1)
            (svg_dir / f"{name}.flat.svg").write_text(flat)
            subprocess.run(["rsvg-convert", "-w", "1600", str(svg_dir / f"{name}.flat.svg"), "-o",
                            str(OUT / f"{name}.png")], check=True)
            log(f"wrote {OUT / name}.svg and .png")
        return 0
    finally:
        workload.stop.set()
        seal_all(nodes, token)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
