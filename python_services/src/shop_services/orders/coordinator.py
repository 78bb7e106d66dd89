"""The Coordinator: owns every saga task and the recovery loop.

A saga runs in a task the coordinator starts (at most one per order), never in
the task of the PlaceOrder call that asked for it. Once an order is recorded
its saga does not depend on the caller: a caller that cancels, loses its
connection (a client crash, an Envoy restart) or runs out of time only stops
waiting; the saga runs to CONFIRMED or FAILED on its merits, and a PlaceOrder
retried with the same request_id waits for that same task. Only shutdown
cancels a saga, and recovery resumes it on the next start.

Recovery. A loop (every SHOP_RECOVERY_INTERVAL_SECONDS, and once at start-up)
drives every unfinished order again: sagas a killed process left behind, and
compensations that could not get through. The steps themselves are saga.py's.

Draining. On SIGTERM the coordinator starts no new saga and leaves the ones in
flight running for the grace period; whatever is left is cancelled mid-step
and finished by recovery on the next start.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from shop.orders.v1 import order_service_pb2 as pb

from shop_services.orders.clients import Clients
from shop_services.orders.saga import Saga, SagaSettings, StepFailedError
from shop_services.orders.store import Store


class Coordinator:
    """Owns every saga task and the recovery loop; cancels and awaits them on close."""

    def __init__(self, store: Store, clients: Clients, settings: SagaSettings, logger: logging.Logger) -> None:
        self._store = store
        self._saga = Saga(store, clients, settings, logger)
        self._settings = settings
        self._logger = logger
        # order_id -> the task driving that order's saga; at most one per order.
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._recovery: asyncio.Task[None] | None = None
        self._draining = False

    def start(self) -> None:
        """Start the recovery loop; its first pass runs at once."""
        if self._recovery is None:
            self._recovery = asyncio.create_task(self._recover_forever(), name="orders-recovery")

    def drive(self, order_id: str) -> asyncio.Task[None] | None:
        """The task driving the order's saga, started if none is; None while draining."""
        task = self._tasks.get(order_id)
        if task is not None or self._draining:
            return task
        task = asyncio.create_task(self._run(order_id), name=f"saga-{order_id}")
        self._tasks[order_id] = task
        task.add_done_callback(functools.partial(self._finished, order_id))
        return task

    @property
    def running(self) -> int:
        """How many sagas are in flight."""
        return len(self._tasks)

    def begin_draining(self) -> None:
        """Start no new saga; the ones in flight keep going until close()."""
        self._draining = True
        if self._recovery is not None:
            self._recovery.cancel()

    async def close(self) -> None:
        """Cancel the recovery loop and every saga (recovery finishes them on the next start)."""
        self.begin_draining()
        tasks = [t for t in (self._recovery, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._recovery = None

    async def _run(self, order_id: str) -> None:
        record = self._store.get(order_id)
        if record is None or record.terminal:
            return
        if record.state != pb.ORDER_STATE_COMPENSATING:
            try:
                # Cancelled only by close() (shutdown): recovery resumes it on the next start.
                await self._saga.forward(order_id)
                return
            except StepFailedError as failure:
                await self._store.compensating(order_id, failure.reason, failure.message, failure.step)
        await self._saga.compensate(order_id)

    def _finished(self, order_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(order_id) is task:
            del self._tasks[order_id]
        if not task.cancelled() and task.exception() is not None:
            self._logger.error(
                "saga stopped by an unexpected error; recovery retries it",
                exc_info=task.exception(),
                extra={"order_id": order_id},
            )

    async def _recover_forever(self) -> None:
        while True:
            try:
                unfinished = self._store.unfinished()
            except Exception:
                self._logger.exception("cannot list unfinished orders")
                unfinished = []
            started = [order_id for order_id in unfinished if order_id not in self._tasks]
            for order_id in started:
                self.drive(order_id)
            if started:
                self._logger.info("recovering unfinished sagas", extra={"order_ids": started})
            await asyncio.sleep(self._settings.recovery_interval)
