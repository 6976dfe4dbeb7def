"""Shared fixtures: real node processes (session-scoped where a test only reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.nodes import NodeProcess


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:
    """Start nodes for one test; every one is stopped at the end."""
    started: list[NodeProcess] = []

    def make(name: str = "node", *args: str, token: str | None = None, start: bool = True) -> NodeProcess:
        node = NodeProcess(data_dir=tmp_path / name, home=tmp_path / "home", name=name, args=list(args), token=token)
        started.append(node)
        return node.start() if start else node

    yield make
    for node in started:
        node.kill()


@pytest.fixture(scope="session")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One long-lived node for read-only tests (fast heartbeat so series fill quickly)."""
    base = tmp_path_factory.mktemp("shared-node")
    node = NodeProcess(data_dir=base / "data", home=base / "home", name="shared",
                       args=["--heartbeat-interval", "0.2", "--stale-after", "2"]).start()
    yield node
    node.kill()
