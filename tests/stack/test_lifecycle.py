"""The local stack's lifecycle, as `make up` / `make down` run it.

A private stack on free ports: up waits until everything is healthy, down
leaves no process behind, data survives a down and an up, and a port that is
already taken is refused with a message naming it and its holder.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_stack
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopstack import stack as stack_module
from shopstack.stack import Stack, StackError, process_alive


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(tmp_path_factory.mktemp("lifecycle"))
    try:
        yield stack
    finally:
        stack.down()


def program_pids(stack: Stack) -> dict[str, int]:
    pids = {}
    for impl in stack.running_impls():
        pid = stack.pid_of(impl.cluster)
        assert pid, f"{impl.cluster} has no pid"
        pids[impl.cluster] = pid
    pid = stack.pid_of("envoy")
    assert pid, "envoy has no pid"
    pids["envoy"] = pid
    return pids


def test_up_then_down_leaves_no_process_and_keeps_the_data(shop: Stack) -> None:
    shop.up(timeout=120)
    sku = f"sku-lifecycle-{uuid.uuid4().hex[:8]}"
    with shop.internal_channel() as channel:
        inventory_grpc.InventoryServiceStub(channel).ImportStock(
            iter([inventory_pb.ImportStockRequest(sku=sku, on_hand=7)]), timeout=15
        )
    pids = program_pids(shop)
    supervisord = shop.supervisord_pid()
    assert supervisord
    # Each program writes its log file itself (stdout and stderr are the
    # file), not a pipe that supervisord must keep draining; and the pid
    # supervisord signals is the program's, not the shell's that opened it.
    for program, pid in pids.items():
        log = str(shop.log_of(program))
        assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (1, 2)] == [log, log], program
        with open(f"/proc/{pid}/comm") as comm:
            assert comm.read().strip() != "sh", program

    shop.down()
    left = {name: pid for name, pid in {**pids, "supervisord": supervisord}.items() if process_alive(pid)}
    assert not left, f"still running after down: {left}"

    shop.up(timeout=120)
    with shop.public_channel() as channel:
        reply = inventory_grpc.InventoryServiceStub(channel).GetStock(
            inventory_pb.GetStockRequest(skus=[sku]), timeout=15
        )
    assert reply.levels[0].on_hand == 7
    shop.down()


def test_a_taken_port_is_refused_naming_the_port_and_its_holder(shop: Stack) -> None:
    assert shop.supervisord_pid() is None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", shop.topology.public_port))
        squatter.listen()
        with pytest.raises(StackError) as refused:
            shop.up(timeout=30)
    message = str(refused.value)
    assert f"port {shop.topology.public_port} (envoy public listener)" in message
    assert f"pid {os.getpid()}" in message, message
    assert shop.supervisord_pid() is None


def test_a_log_past_its_size_is_moved_aside_when_the_stack_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack(tmp_path)
    stack.logs_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(stack_module, "LOG_ROTATE_BYTES", 100)
    big, small = stack.log_of("catalog-go"), stack.log_of("envoy")
    big.write_text("x" * 101)
    big.with_name(big.name + ".1").write_text("older")
    small.write_text("y" * 100)
    stack.rotate_logs()
    assert not big.exists()
    assert big.with_name(big.name + ".1").read_text() == "x" * 101
    assert small.read_text() == "y" * 100
