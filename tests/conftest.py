"""Shared fixtures: real node processes (session-scoped where a test only reads) and in-process
fleets (``fleet``, ``manual_fleet``: see tests/support/inproc.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.inproc import fleet, manual_fleet  # noqa: F401  (fixtures)
from tests.support.nodes import NodeFactory, NodeProcess


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start real nodes for one test: ``node_factory(name, *flags, token=…)``; every one is killed
    at the end."""
    factory = NodeFactory(tmp_path)
    yield factory
    factory.kill_all()


@pytest.fixture(scope="session")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One long-lived node for read-only tests (fast heartbeat so series fill quickly)."""
    base = tmp_path_factory.mktemp("shared-node")
    node = NodeProcess(data_dir=base / "data", home=base / "home", name="shared",
                       args=["--heartbeat-interval", "0.2", "--stale-after", "2"]).start()
    yield node
    node.kill()
