"""`python -m shop_services.orders` as a real process: crash recovery, draining, configuration, logs.

The fakes run in the test's event loop; the orders process talks to them over
loopback. Crash tests SIGKILL the process while a step is in flight and start
a new one on the same database, which must drive the saga to a terminal state
with the fakes consistent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.orders.v1 import order_service_pb2 as pb
from shop.orders.v1 import order_service_pb2_grpc as pb_grpc
from shop.payments.v1 import payment_service_pb2 as payments_pb

from orders.fakes import Fakes
from orders.support import order_request
from support import DEADLINE, wait_serving


class OrdersProcess:
    """One `python -m shop_services.orders` process and the JSON lines it logs."""

    def __init__(self, db_path: Path, fakes: Fakes, **env: str) -> None:
        self.env = {
            **os.environ,
            "SHOP_LISTEN_ADDR": "127.0.0.1:0",
            "SHOP_DB_PATH": str(db_path),
            "SHOP_CATALOG_ADDR": fakes.addresses["catalog"],
            "SHOP_INVENTORY_ADDR": fakes.addresses["inventory"],
            "SHOP_PAYMENTS_ADDR": fakes.addresses["payments"],
            "SHOP_STEP_TIMEOUT_SECONDS": "20",
            "SHOP_RETRY_BACKOFF_SECONDS": "0.01",
            "SHOP_RECOVERY_INTERVAL_SECONDS": "0.2",
            "SHOP_SHUTDOWN_GRACE_SECONDS": "20",
            **env,
        }
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self.channel: grpc.aio.Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        # msg -> set once the process has logged a line with that msg.
        self._logged: dict[str, asyncio.Event] = {}

    def logged(self, msg: str) -> asyncio.Event:
        """An event set once the process logs a line whose msg is msg."""
        return self._logged.setdefault(msg, asyncio.Event())

    async def start(self) -> pb_grpc.OrderServiceAsyncStub:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shop_services.orders",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(listening))
        address = await asyncio.wait_for(listening, DEADLINE)
        self.channel = grpc.aio.insecure_channel(address)
        await wait_serving(self.channel, "shop.orders.v1.OrderService")
        return pb_grpc.OrderServiceStub(self.channel)

    async def _read(self, listening: asyncio.Future[str]) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            text = raw.decode().strip()
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                line = {"msg": "not json", "text": text}
            self.lines.append(line)
            self.logged(str(line.get("msg"))).set()
            if line.get("msg") == "listening" and not listening.done():
                listening.set_result(line["addr"])
        if not listening.done():
            listening.set_exception(RuntimeError(f"orders exited before listening: {self.lines}"))

    async def kill(self) -> None:
        """SIGKILL the process and wait for it; calls in flight fail as the connection drops."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.wait()

    async def terminate(self) -> int:
        """SIGTERM the process and return its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self) -> int:
        """Wait for the process to exit (killing it after a bound) and for its last log line."""
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), DEADLINE)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        if self._reader is not None:
            await self._reader
            self._reader = None
        return code

    async def close(self) -> None:
        """Kill the process if it still runs and close the channel."""
        if self.process is not None and self.process.returncode is None:
            await self.kill()
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


@pytest.fixture
async def processes() -> Any:
    started: list[OrdersProcess] = []
    yield started
    for process in started:
        await process.close()


async def final_order(stub: pb_grpc.OrderServiceAsyncStub, customer_id: str) -> pb.Order:
    """The customer's only order, once WatchOrder says it is terminal."""
    [order] = (await stub.ListOrders(pb.ListOrdersRequest(customer_id=customer_id), timeout=DEADLINE)).orders
    messages = [m.order async for m in stub.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), timeout=DEADLINE)]
    return messages[-1]


async def test_killed_during_charge_the_restarted_service_confirms(
    tmp_path: Path, fakes: Fakes, processes: list[OrdersProcess]
) -> None:
    db = tmp_path / "orders.db"
    first = OrdersProcess(db, fakes)
    processes.append(first)
    stub = await first.start()
    fakes.payments.charge_gate.close()
    placing = asyncio.ensure_future(stub.PlaceOrder(order_request("r-crash-charge", customer_id="crash"), timeout=60))
    await asyncio.wait_for(fakes.payments.charge_gate.entered.wait(), DEADLINE)
    # The card is charged and the answer is still on its way when the process dies.
    await first.kill()
    with pytest.raises(grpc.aio.AioRpcError):
        await placing
    fakes.payments.charge_gate.open()

    second = OrdersProcess(db, fakes)
    processes.append(second)
    stub = await second.start()
    order = await final_order(stub, "crash")

    assert order.state == pb.ORDER_STATE_CONFIRMED, (order, second.lines)
    # The in-doubt charge was replayed with its request id: one payment, kept because the order is confirmed.
    charges = fakes.payments.seen("Charge")
    assert len(charges) == 2 and {c.request.request_id for c in charges} == {f"{order.order_id}/charge"}
    assert [p.state for p in fakes.payments.payments.values()] == [payments_pb.PAYMENT_STATE_SUCCEEDED]
    assert fakes.inventory.reservations[order.reservation_id].state == inventory_pb.RESERVATION_STATE_COMMITTED
    # A retry of the original call returns the same order and starts nothing new.
    again = await stub.PlaceOrder(order_request("r-crash-charge", customer_id="crash"), timeout=DEADLINE)
    assert again.order == order
    assert len(fakes.payments.seen("Charge")) == 2
    assert await second.terminate() == 0


async def test_killed_during_reserve_the_restarted_service_compensates(
    tmp_path: Path, fakes: Fakes, processes: list[OrdersProcess]
) -> None:
    db = tmp_path / "orders.db"
    first = OrdersProcess(db, fakes)
    processes.append(first)
    stub = await first.start()
    fakes.inventory.reserve_gate.close()
    request = order_request("r-crash-reserve", customer_id="crash", token="tok_declined")
    placing = asyncio.ensure_future(stub.PlaceOrder(request, timeout=60))
    await asyncio.wait_for(fakes.inventory.reserve_gate.entered.wait(), DEADLINE)
    # The stock is reserved and the answer is still on its way when the process dies.
    await first.kill()
    with pytest.raises(grpc.aio.AioRpcError):
        await placing
    fakes.inventory.reserve_gate.open()

    second = OrdersProcess(db, fakes)
    processes.append(second)
    stub = await second.start()
    order = await final_order(stub, "crash")

    assert order.state == pb.ORDER_STATE_FAILED, (order, second.lines)
    assert order.failure_reason == pb.ORDER_FAILURE_REASON_CARD_DECLINED
    # The replayed Reserve found the first reservation; it was released, nothing is held, nothing charged.
    assert len(fakes.inventory.reservations) == 1
    assert fakes.inventory.reservations[order.reservation_id].state == inventory_pb.RESERVATION_STATE_RELEASED
    assert fakes.inventory.held() == [] and fakes.payments.payments == {}
    assert await second.terminate() == 0


async def test_sigterm_lets_the_saga_in_flight_finish(
    tmp_path: Path, fakes: Fakes, processes: list[OrdersProcess]
) -> None:
    process = OrdersProcess(tmp_path / "orders.db", fakes)
    processes.append(process)
    stub = await process.start()
    fakes.payments.charge_gate.close()
    placing = asyncio.ensure_future(stub.PlaceOrder(order_request("r-drain"), timeout=DEADLINE))
    await asyncio.wait_for(fakes.payments.charge_gate.entered.wait(), DEADLINE)
    assert process.process is not None
    process.process.send_signal(signal.SIGTERM)
    # Wait until the process says it is draining, then let the charge answer.
    await asyncio.wait_for(process.logged("draining").wait(), DEADLINE)
    fakes.payments.charge_gate.open()

    order = (await placing).order
    assert order.state == pb.ORDER_STATE_CONFIRMED
    assert await process.wait() == 0
    assert any(line.get("msg") == "stopped" for line in process.lines)


async def test_every_rpc_is_logged_as_json_with_its_request_id(
    tmp_path: Path, fakes: Fakes, processes: list[OrdersProcess]
) -> None:
    process = OrdersProcess(tmp_path / "orders.db", fakes)
    processes.append(process)
    stub = await process.start()
    await stub.PlaceOrder(order_request("r-log"), timeout=DEADLINE, metadata=(("x-request-id", "log-7"),))
    assert await process.terminate() == 0

    [rpc] = [line for line in process.lines if line.get("msg") == "rpc" and line.get("request_id") == "log-7"]
    assert rpc["method"] == "/shop.orders.v1.OrderService/PlaceOrder"
    assert rpc["code"] == "OK" and isinstance(rpc["duration_ms"], float)
    assert rpc["service"] == "orders" and rpc["level"] == "info" and "time" in rpc


@pytest.mark.parametrize("missing", ["SHOP_CATALOG_ADDR", "SHOP_INVENTORY_ADDR", "SHOP_PAYMENTS_ADDR"])
async def test_a_missing_dependency_address_fails_fast_naming_it(tmp_path: Path, missing: str) -> None:
    env = {
        **os.environ,
        "SHOP_DB_PATH": str(tmp_path / "orders.db"),
        "SHOP_LISTEN_ADDR": "127.0.0.1:0",
        "SHOP_CATALOG_ADDR": "127.0.0.1:1",
        "SHOP_INVENTORY_ADDR": "127.0.0.1:1",
        "SHOP_PAYMENTS_ADDR": "127.0.0.1:1",
    }
    del env[missing]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shop_services.orders", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 2
    assert missing in stderr.decode()
