"""`python -m shop_services.payments` as a real process: start-up, logs and SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.type import money_pb2
from shop.payments.v1 import payment_service_pb2 as pb
from shop.payments.v1 import payment_service_pb2_grpc as pb_grpc

from support import DEADLINE, ServiceProcess, wait_serving


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    env = {
        **os.environ,
        "SHOP_LISTEN_ADDR": "127.0.0.1:0",
        "SHOP_DB_PATH": str(tmp_path / "payments.db"),
        "SHOP_SHUTDOWN_GRACE_SECONDS": "60",
        "SHOP_LOG_LEVEL": "debug",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shop_services.payments",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield ServiceProcess(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_listening_line_names_the_bound_address(service: ServiceProcess) -> None:
    listening = await service.next_line("listening")
    assert listening["service"] == "payments"
    assert listening["level"] == "info"
    host, port = listening["addr"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    async with grpc.aio.insecure_channel(listening["addr"]) as channel:
        await wait_serving(channel)
        await wait_serving(channel, "shop.payments.v1.PaymentService")


async def test_rpc_line_has_method_code_duration_and_request_id(service: ServiceProcess) -> None:
    listening = await service.next_line("listening")
    async with grpc.aio.insecure_channel(listening["addr"]) as channel:
        await wait_serving(channel)
        stub = pb_grpc.PaymentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetPayment(
                pb.GetPaymentRequest(payment_id="pay_missing"),
                metadata=(("x-request-id", "trace-1"),),
                timeout=DEADLINE,
            )
    line = await service.next_line("rpc", method="/shop.payments.v1.PaymentService/GetPayment")
    assert line["code"] == "NOT_FOUND"
    assert line["request_id"] == "trace-1"
    assert isinstance(line["duration_ms"], int | float)


async def test_sigterm_lets_the_in_flight_charge_finish_then_exits_0(service: ServiceProcess, tmp_path: Path) -> None:
    listening = await service.next_line("listening")
    db_path = tmp_path / "payments.db"
    async with grpc.aio.insecure_channel(listening["addr"]) as channel:
        await wait_serving(channel)
        stub = pb_grpc.PaymentServiceStub(channel)

        # Hold the database's write lock, so the charge waits inside its
        # transaction (the service's busy timeout) while the process drains.
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        request = pb.ChargeRequest(
            request_id="in-flight-1",
            amount=money_pb2.Money(currency_code="EUR", units=5),
            payment_token="tok_success",
        )
        in_flight = asyncio.ensure_future(stub.Charge(request, timeout=DEADLINE))
        try:
            await service.next_line("charging")  # the handler is running
            service.process.send_signal(signal.SIGTERM)
            await service.next_line("draining")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        response = await in_flight
        assert response.payment.state == pb.PAYMENT_STATE_SUCCEEDED

    assert await asyncio.wait_for(service.process.wait(), timeout=DEADLINE) == 0
    await service.next_line("stopped")
    stored = sqlite3.connect(db_path)
    try:
        rows = stored.execute("SELECT payment_id FROM payments WHERE request_id = 'in-flight-1'").fetchall()
    finally:
        stored.close()
    assert rows == [(response.payment.payment_id,)]


async def test_a_taken_port_exits_non_zero_naming_the_address(tmp_path: Path, service: ServiceProcess) -> None:
    taken = (await service.next_line("listening"))["addr"]
    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shop_services.payments",
        env={**os.environ, "SHOP_LISTEN_ADDR": taken, "SHOP_DB_PATH": str(tmp_path / "second.db")},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await asyncio.wait_for(second.communicate(), timeout=DEADLINE)
    assert second.returncode != 0, output
    assert taken in output.decode(), output


async def test_a_malformed_variable_fails_fast_naming_it(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shop_services.payments",
        env={**os.environ, "SHOP_SHUTDOWN_GRACE_SECONDS": "soon", "SHOP_DB_PATH": str(tmp_path / "p.db")},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(process.communicate(), timeout=DEADLINE)
    assert process.returncode != 0
    assert "SHOP_SHUTDOWN_GRACE_SECONDS" in errors.decode(), errors


async def test_docker_healthcheck_module_reports_serving(service: ServiceProcess) -> None:
    address = (await service.next_line("listening"))["addr"]
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_serving(channel)
    for args in ([address], [address, "shop.payments.v1.PaymentService"]):
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shop_services.common.healthcheck", *args, stderr=asyncio.subprocess.PIPE
        )
        _, errors = await asyncio.wait_for(probe.communicate(), timeout=DEADLINE)
        assert probe.returncode == 0, errors.decode()


async def test_docker_healthcheck_module_fails_for_an_unknown_service(service: ServiceProcess) -> None:
    address = (await service.next_line("listening"))["addr"]
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shop_services.common.healthcheck",
        address,
        "no.such.Service",
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(probe.communicate(), timeout=DEADLINE)
    assert probe.returncode == 1
    assert "NOT_FOUND" in errors.decode(), errors.decode()
