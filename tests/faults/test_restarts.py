"""Restarts under a steady order load: latency, never a failed good order.

Each scenario keeps two clients placing orders through the public listener
(tests/reliability.py, OrderLoad: good cards, plenty of stock, a client retry
with the same request_id after UNAVAILABLE), kills one program with SIGKILL
once some orders have confirmed, lets supervisord restart it, and stops once
more orders have confirmed after the restart. Then:

- every order ended CONFIRMED, exactly one per request_id, each paid once;
- no Refund and no Release was made for any of them (no customer saw a charge
  undone, no reservation was made and released);
- each SKU's stock fell by exactly the orders confirmed, and nothing is left
  reserved.

Payments, each inventory implementation (the stack splits inventory traffic
across all three), orders and Envoy itself are each restarted once, one after
another under the same load (one row each in the reliability table).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from e2e.support import Shop, wait_for
from reliability import OrderLoad, Outcome, record
from shopstack.stack import ENVOY_PROGRAM, Stack

# Orders confirmed before the first kill, and after each restart.
BEFORE, AFTER = 3, 4


@pytest.fixture(scope="module")
def shop(reliability_stack: Stack) -> Iterator[Shop]:
    with Shop.open(reliability_stack) as opened:
        yield opened


# Payments, every inventory implementation, orders, Envoy.
PROGRAMS = ["payments-python", "inventory-node", "inventory-go", "inventory-python", "orders-python", ENVOY_PROGRAM]


def test_restarts_under_load_fail_no_good_order(reliability_stack: Stack, shop: Shop) -> None:
    running = {impl.cluster for impl in reliability_stack.running_impls()} | {ENVOY_PROGRAM}
    programs = [p for p in PROGRAMS if p in running]
    skus = [f"sku-{name}" for name in ("oat-milk-1l", "almond-milk-1l")]
    shop.import_stock({sku: 100_000 for sku in skus})
    before = {sku: shop.stock(sku) for sku in skus}

    windows: list[tuple[str, float, float]] = []
    with OrderLoad(shop, skus) as load:
        wait_for(f"{BEFORE} orders to confirm", lambda: load.confirmed() >= BEFORE, timeout=60)
        for program in programs:
            old_pid = reliability_stack.pid_of(program)
            assert old_pid is not None, f"{program} is not running"
            killed = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            wait_for(
                f"{AFTER} orders placed after killing {program} to confirm",
                lambda k=killed: load.confirmed(since=k) >= AFTER,
                timeout=90,
                interval=0.05,
            )
            windows.append((program, killed, time.monotonic()))
            new_pid = wait_for(f"supervisord to restart {program}", lambda p=program: reliability_stack.pid_of(p))
            assert new_pid != old_pid, f"{program} was not restarted"
    summary = load.check()

    confirmed: dict[str, int] = {}
    for placed in load.placed:
        sku = placed.request.lines[0].product_id
        confirmed[sku] = confirmed.get(sku, 0) + 1
    for sku in skus:
        after = shop.stock(sku)
        expected = (before[sku].on_hand - confirmed.get(sku, 0), before[sku].reserved)
        assert (after.on_hand, after.reserved) == expected, f"{sku}: {before[sku]} -> {after}, {confirmed}"
    for program, start, end in windows:
        record(
            Outcome(
                f"SIGKILL {program} (supervisord restarts it)",
                "2 clients placing orders back to back",
                "0 orders failed; 0 refunds, 0 releases",
                load.during(start, end),
            )
        )
    record(
        Outcome(
            "all the restarts above, one after another",
            "the same load",
            "stock and money reconcile",
            f"{summary}; each SKU's on_hand fell by exactly its confirmed orders, nothing left reserved",
        )
    )
