"""Fixtures of the reliability and security suite: real cortex-node processes on 127.0.0.1.

``nodes`` starts nodes for one test (``tests.support.nodes.NodeFactory``: name, flags, token,
extra environment, entry module, data directory) and kills every one of them (and whatever an
execute_task of theirs left running, found by the test's ``marker``) at the end, also when the
test fails.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.reliability.helpers import kill_strays
from tests.support.nodes import NodeFactory

FAST = ["--heartbeat-interval", "0.3", "--stale-after", "1.5"]

NodeMaker = NodeFactory


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique word to put into commands an execute_task runs, so strays can be found and killed."""
    word = f"cortex-rel-{uuid.uuid4().hex[:12]}"
    yield word
    kill_strays(word)


@pytest.fixture
def nodes(tmp_path: Path, marker: str) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path)
    yield factory
    factory.kill_all()
    kill_strays(marker)
