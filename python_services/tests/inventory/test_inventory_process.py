"""`python -m shop_services.inventory` as a real process: logs, configuration and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc

from inventory.support import SCHEMA_FILE, next_message, write_seed
from support import DEADLINE, ServiceProcess, fails, wait_serving


def service_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "SHOP_LISTEN_ADDR": "127.0.0.1:0",
        "SHOP_DB_PATH": str(tmp_path / "inventory.db"),
        "SHOP_SEED_FILE": str(write_seed(tmp_path / "products.json")),
        "SHOP_INVENTORY_SCHEMA": str(SCHEMA_FILE),
        "SHOP_SHUTDOWN_GRACE_SECONDS": "60",
        **overrides,
    }


async def start(tmp_path: Path, **overrides: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shop_services.inventory",
        env=service_env(tmp_path, **overrides),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    process = await start(tmp_path)
    try:
        yield ServiceProcess(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_log_lines_name_the_service_and_the_implementation(service: ServiceProcess) -> None:
    listening = await service.next_line("listening")
    assert (listening["service"], listening["impl"], listening["level"]) == ("inventory", "python", "info")
    async with grpc.aio.insecure_channel(listening["addr"]) as channel:
        await wait_serving(channel, "shop.inventory.v1.InventoryService")
        stub = pb_grpc.InventoryServiceStub(channel)
        await stub.GetStock(pb.GetStockRequest(skus=["sku-a"]), metadata=(("x-request-id", "t-1"),), timeout=DEADLINE)
    line = await service.next_line("rpc", method="/shop.inventory.v1.InventoryService/GetStock")
    assert (line["code"], line["request_id"], line["impl"]) == ("OK", "t-1", "python")


async def test_sigterm_ends_watches_then_exits_0(service: ServiceProcess) -> None:
    address = (await service.next_line("listening"))["addr"]
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_serving(channel)
        stub = pb_grpc.InventoryServiceStub(channel)
        stream = stub.WatchStock(pb.WatchStockRequest(skus=["sku-a"]), timeout=DEADLINE)
        await next_message(stream)
        service.process.send_signal(signal.SIGTERM)
        error = await fails(stream.read())
        assert error.code == grpc.StatusCode.UNAVAILABLE, error
    assert await asyncio.wait_for(service.process.wait(), timeout=DEADLINE) == 0
    await service.next_line("stopped")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHOP_RESERVATION_TTL_SECONDS", "0"),
        ("SHOP_RESERVATION_TTL_SECONDS", "soon"),
        ("SHOP_SHUTDOWN_GRACE_SECONDS", "-1"),
        ("SHOP_LOG_LEVEL", "loud"),
        ("SHOP_LISTEN_ADDR", "no-port"),
    ],
)
async def test_a_malformed_variable_fails_fast_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    process = await start(tmp_path, **{variable: value})
    _, errors = await asyncio.wait_for(process.communicate(), timeout=DEADLINE)
    assert process.returncode == 2
    assert variable in errors.decode(), errors.decode()


async def test_a_missing_schema_file_fails_start_up_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-schema.sql")
    process = await start(tmp_path, SHOP_INVENTORY_SCHEMA=missing)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=DEADLINE)
    assert process.returncode == 1
    assert missing in output.decode(), output.decode()


async def test_fractional_ttl_is_accepted(tmp_path: Path) -> None:
    process = ServiceProcess(await start(tmp_path, SHOP_RESERVATION_TTL_SECONDS="0.25"))
    try:
        address = (await process.next_line("listening"))["addr"]
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.InventoryServiceStub(channel)
            request = pb.ReserveRequest(request_id="r-1", lines=[pb.ReservationLine(sku="sku-a", quantity=1)])
            reservation = (await stub.Reserve(request, timeout=DEADLINE, wait_for_ready=True)).reservation
        assert reservation.expire_time.ToMilliseconds() - reservation.create_time.ToMilliseconds() == 250
    finally:
        process.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.process.wait(), timeout=DEADLINE) == 0
