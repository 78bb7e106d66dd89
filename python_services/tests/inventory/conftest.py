"""Fixtures: a real inventory server on 127.0.0.1 port 0 over a test seed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inventory.support import InventoryNode, Stub, write_seed


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    return write_seed(tmp_path / "products.json")


@pytest.fixture
async def node(tmp_path: Path, seed_file: Path) -> AsyncIterator[InventoryNode]:
    node = InventoryNode(tmp_path / "inventory.db", seed_file)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture
def inventory(node: InventoryNode) -> Stub:
    assert node.stub is not None
    return node.stub
