"""Fixtures of the reliability and security suite: real cortex-node processes on 127.0.0.1.

``nodes`` starts nodes for one test and kills every one of them (and whatever an execute_task of
theirs left running, found by the test's ``marker``) at the end, also when the test fails.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.reliability.helpers import Node, kill_strays

FAST = ["--heartbeat-interval", "0.3", "--stale-after", "1.5"]

NodeMaker = Callable[..., Node]


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique word to put into commands an execute_task runs, so strays can be found and killed."""
    word = f"cortex-rel-{uuid.uuid4().hex[:12]}"
    yield word
    kill_strays(word)


@pytest.fixture
def nodes(tmp_path: Path, marker: str) -> Iterator[NodeMaker]:
    started: list[Node] = []

    def make(name: str = "node", *args: str, token: str | None = None, extra_env: dict[str, str] | None = None,
             module: str = "cortex_node.cli.node", start: bool = True, data_dir: Path | None = None) -> Node:
        node = Node(data_dir=data_dir or tmp_path / name, home=tmp_path / "home", name=name, args=list(args),
                    token=token, extra_env=dict(extra_env or {}), module=module)
        started.append(node)
        return node.start() if start else node

    yield make
    for node in started:
        node.kill()
    kill_strays(marker)
