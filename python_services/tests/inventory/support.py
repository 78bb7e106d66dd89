"""Shared support of the inventory tests: in-process servers on one database
file, the test seed, and stream readers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import grpc
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc

from shop_services.common.config import find_repo_file
from shop_services.inventory import InventoryServer, create_inventory_server
from support import DEADLINE, wait_serving

DOMAIN = "inventory.shop.example"
SCHEMA_FILE = find_repo_file("data/inventory_schema.sql")
PRODUCTS_FILE = find_repo_file("data/products.json")
assert SCHEMA_FILE is not None and PRODUCTS_FILE is not None, "run the tests inside the repository"

# The test seed: a few SKUs with known stock.
SEED = {"sku-a": 10, "sku-b": 5, "sku-c": 0, "sku-d": 100}

# The async stub type exists for type checkers only (mypy-protobuf).
Stub: TypeAlias = "pb_grpc.InventoryServiceAsyncStub"


def write_seed(path: Path, stock: dict[str, int] = SEED) -> Path:
    products = [{"id": sku, "name": sku, "initial_stock": n} for sku, n in stock.items()]
    path.write_text(json.dumps({"products": products}), encoding="utf-8")
    return path


class InventoryNode:
    """One in-process inventory server on a database file, and a client to it."""

    def __init__(
        self, db_path: Path, seed_file: Path, ttl_seconds: float = 900, sweep_interval: float | None = None
    ) -> None:
        self.db_path = db_path
        self.seed_file = seed_file
        self.ttl_seconds = ttl_seconds
        self.sweep_interval = sweep_interval
        self.server: InventoryServer | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: Stub | None = None

    async def start(self) -> Stub:
        self.server = await create_inventory_server(
            "127.0.0.1:0",
            self.db_path,
            seed_file=self.seed_file,
            schema_file=SCHEMA_FILE,
            reservation_ttl_seconds=self.ttl_seconds,
            sweep_interval=self.sweep_interval,
        )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        await wait_serving(self.channel, "shop.inventory.v1.InventoryService")
        self.stub = pb_grpc.InventoryServiceStub(self.channel)
        return self.stub

    async def stop(self, grace: float = 5) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    async def restart(self) -> Stub:
        await self.stop()
        return await self.start()


async def levels(stub: Stub, *skus: str) -> dict[str, pb.StockLevel]:
    response = await stub.GetStock(pb.GetStockRequest(skus=list(skus)), timeout=DEADLINE)
    return {level.sku: level for level in response.levels}


def reserve_request(request_id: str, *lines: tuple[str, int]) -> pb.ReserveRequest:
    return pb.ReserveRequest(request_id=request_id, lines=[pb.ReservationLine(sku=sku, quantity=q) for sku, q in lines])


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait up to DEADLINE until condition() holds, checking every 10 ms (for
    effects that happen after a call returns, such as a stream's clean-up)."""
    for _ in range(int(DEADLINE / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def until_past(ms_timestamp: int) -> None:
    """Wait until the wall clock is past a Unix-millisecond time (a reservation's expire_time)."""
    delay = ms_timestamp / 1000 - time.time()
    if delay > 0:
        await asyncio.sleep(delay + 0.01)
    assert time.time() * 1000 > ms_timestamp


async def next_message(stream: object) -> pb.WatchStockResponse:
    """The next message of a WatchStock call, with a deadline so a hang fails the test."""
    message = await asyncio.wait_for(stream.read(), timeout=DEADLINE)  # type: ignore[attr-defined]
    assert isinstance(message, pb.WatchStockResponse), f"the stream ended: {message}"
    return message
