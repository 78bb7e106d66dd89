"""shop.inventory.v1.InventoryService on grpc.aio: the Python implementation.

It implements the contract every inventory implements (inventory_service.proto,
held to tests/contract/test_inventory.py) on the shared database layout
(data/inventory_schema.sql), so any implementation can replace another, even
on one database file at once. Request validation follows the proto's limits
and the field paths of docs/conventions.md; the store does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import prometheus_client
from google.protobuf import timestamp_pb2
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc

from shop_services.common.errors import RpcError
from shop_services.common.server import Running, Service, create_server
from shop_services.common.tls import Tls
from shop_services.inventory import errors
from shop_services.inventory.store import (
    ImportItem,
    ImportSummary,
    InventoryStore,
    Line,
    ReservationRecord,
    ReservationStateName,
    StockRow,
)
from shop_services.inventory.watch import StockWatchHub

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InventoryService"].full_name

# Limits from inventory_service.proto.
MAX_SKUS = 100
MAX_LINES = 100
MAX_REQUEST_ID_LENGTH = 128
MAX_LINE_QUANTITY = 10_000
MAX_ON_HAND = 1_000_000

_STATES: dict[ReservationStateName, pb.ReservationState.ValueType] = {
    "RESERVED": pb.RESERVATION_STATE_RESERVED,
    "COMMITTED": pb.RESERVATION_STATE_COMMITTED,
    "RELEASED": pb.RESERVATION_STATE_RELEASED,
    "EXPIRED": pb.RESERVATION_STATE_EXPIRED,
}

Violation = tuple[str, str]


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def to_level(row: StockRow) -> pb.StockLevel:
    return pb.StockLevel(
        sku=row.sku,
        on_hand=row.on_hand,
        reserved=row.reserved,
        available=row.on_hand - row.reserved,
        update_time=_timestamp(row.update_time),
    )


def to_reservation(record: ReservationRecord) -> pb.Reservation:
    return pb.Reservation(
        reservation_id=record.reservation_id,
        request_id=record.request_id,
        lines=[pb.ReservationLine(sku=line.sku, quantity=line.quantity) for line in record.lines],
        state=_STATES[record.state],
        create_time=_timestamp(record.create_time),
        expire_time=_timestamp(record.expire_time),
    )


def check_skus(skus: Sequence[str], field: str = "skus") -> list[Violation]:
    """1 to MAX_SKUS non-empty SKUs."""
    if not 1 <= len(skus) <= MAX_SKUS:
        return [(field, f"must list 1 to {MAX_SKUS} SKUs; got {len(skus)}")]
    return [(f"{field}[{i}]", "must not be empty") for i, sku in enumerate(skus) if sku == ""]


def check_reservation_id(reservation_id: str) -> list[Violation]:
    return [("reservation_id", "must be set")] if reservation_id == "" else []


def check_reserve(request_id: str, lines: Sequence[pb.ReservationLine]) -> list[Violation]:
    violations: list[Violation] = []
    if len(request_id) == 0:
        violations.append(("request_id", "must be set"))
    elif len(request_id) > MAX_REQUEST_ID_LENGTH:
        violations.append(("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters; got {len(request_id)}"))
    if not 1 <= len(lines) <= MAX_LINES:
        violations.append(("lines", f"must list 1 to {MAX_LINES} lines; got {len(lines)}"))
        return violations
    for i, line in enumerate(lines):
        if line.sku == "":
            violations.append((f"lines[{i}].sku", "must be set"))
        if not 1 <= line.quantity <= MAX_LINE_QUANTITY:
            violations.append((f"lines[{i}].quantity", f"must be 1 to {MAX_LINE_QUANTITY}; got {line.quantity}"))
    return violations


def check_import_items(items: Sequence[pb.ImportStockRequest]) -> list[Violation]:
    """Each item of an ImportStock stream, by its zero-based index."""
    violations: list[Violation] = []
    for i, item in enumerate(items):
        if item.sku == "":
            violations.append((f"items[{i}].sku", "must be set"))
        if not 0 <= item.on_hand <= MAX_ON_HAND:
            violations.append((f"items[{i}].on_hand", f"must be 0 to {MAX_ON_HAND}; got {item.on_hand}"))
    return violations


def _fail(violations: Iterable[Violation]) -> None:
    items = list(violations)
    if items:
        raise errors.invalid_argument(items)


# The inventory series every implementation exports under the same names
# (docs/observability.md); the bootstrap serves them on the metrics port.
RESERVATIONS = prometheus_client.Counter(
    "shop_inventory_reservations",
    "Reservations by what happened to them: reserved, committed or released.",
    ("outcome",),
)
EXPIRED = prometheus_client.Counter(
    "shop_inventory_reservations_expired", "Reservations the sweeper expired because they outlived their TTL."
)
WATCHERS = prometheus_client.Gauge("shop_inventory_watchers", "Open WatchStock streams.")


class InventoryService(pb_grpc.InventoryServiceServicer):
    """The InventoryService handlers over an InventoryStore and a StockWatchHub."""

    def __init__(self, store: InventoryStore, hub: StockWatchHub, reservation_ttl_ms: int) -> None:
        self._store = store
        self._hub = hub
        self._ttl_ms = reservation_ttl_ms

    async def GetStock(
        self,
        request: pb.GetStockRequest,
        context: grpc.aio.ServicerContext[pb.GetStockRequest, pb.GetStockResponse],
    ) -> pb.GetStockResponse:
        _fail(check_skus(request.skus))
        found = await self._store.read_levels(request.skus)
        return pb.GetStockResponse(levels=[to_level(found[sku]) for sku in request.skus])

    async def Reserve(
        self,
        request: pb.ReserveRequest,
        context: grpc.aio.ServicerContext[pb.ReserveRequest, pb.ReserveResponse],
    ) -> pb.ReserveResponse:
        _fail(check_reserve(request.request_id, request.lines))
        lines = [Line(line.sku, line.quantity) for line in request.lines]
        record = await self._store.reserve(request.request_id, lines, self._ttl_ms)
        RESERVATIONS.labels("reserved").inc()
        return pb.ReserveResponse(reservation=to_reservation(record))

    async def Commit(
        self,
        request: pb.CommitRequest,
        context: grpc.aio.ServicerContext[pb.CommitRequest, pb.CommitResponse],
    ) -> pb.CommitResponse:
        _fail(check_reservation_id(request.reservation_id))
        record = await self._store.commit(request.reservation_id)
        RESERVATIONS.labels("committed").inc()
        return pb.CommitResponse(reservation=to_reservation(record))

    async def Release(
        self,
        request: pb.ReleaseRequest,
        context: grpc.aio.ServicerContext[pb.ReleaseRequest, pb.ReleaseResponse],
    ) -> pb.ReleaseResponse:
        _fail(check_reservation_id(request.reservation_id))
        record = await self._store.release(request.reservation_id)
        RESERVATIONS.labels("released").inc()
        return pb.ReleaseResponse(reservation=to_reservation(record))

    async def WatchStock(
        self,
        request: pb.WatchStockRequest,
        context: grpc.aio.ServicerContext[pb.WatchStockRequest, pb.WatchStockResponse],
    ) -> AsyncIterator[pb.WatchStockResponse]:
        _fail(check_skus(request.skus))
        # One message per SKU, however often the request names it.
        watch = await self._hub.watch(list(dict.fromkeys(request.skus)))
        try:
            async for event in watch.events():
                yield pb.WatchStockResponse(level=to_level(event.level), initial=event.initial)
        finally:
            self._hub.remove(watch)

    async def ImportStock(
        self,
        request_iterator: AsyncIterator[pb.ImportStockRequest],
        context: grpc.aio.ServicerContext[pb.ImportStockRequest, pb.ImportStockResponse],
    ) -> pb.ImportStockResponse:
        items = [item async for item in request_iterator]
        # A reset stream (the client cancelled, or its deadline passed) ends
        # the request iterator just as a half-close does; grpc.aio learns of
        # the reset from the core's completion queue a few milliseconds later.
        # Import is a bulk operation: wait that long, then apply only an import
        # the client really finished sending.
        await asyncio.sleep(_RESET_GRACE_SECONDS)
        remaining = context.time_remaining()
        if context.cancelled() or (remaining is not None and remaining <= 0):
            raise RpcError(
                grpc.StatusCode.CANCELLED, "The import was cancelled before it finished; nothing was applied."
            )
        _fail(check_import_items(items))
        outcome = await self._store.import_stock([ImportItem(item.sku, item.on_hand) for item in items])
        if not isinstance(outcome, ImportSummary):
            raise errors.invalid_argument(
                (f"items[{problem.index}].{problem.field}", problem.description) for problem in outcome
            )
        return pb.ImportStockResponse(
            items_received=len(items), skus_created=outcome.skus_created, skus_updated=outcome.skus_updated
        )


# How long ImportStock waits after the last item for a reset to surface.
_RESET_GRACE_SECONDS = 0.05


def sweep_interval_seconds(ttl_ms: int) -> float:
    """How often overdue reservations are expired so that watchers see it:
    half the time to live, within 50 ms and 5 s, in every implementation."""
    return min(5000, max(50, math.floor(ttl_ms / 2))) / 1000


def ttl_ms_of(seconds: float) -> int:
    """Seconds to whole milliseconds, halves rounded up (JavaScript's Math.round)."""
    return math.floor(seconds * 1000 + 0.5)


@dataclass(kw_only=True)
class InventoryServer(Running):
    """A started inventory server with the store, watch hub and sweeper it owns."""

    store: InventoryStore
    hub: StockWatchHub
    sweeper: asyncio.Task[None]

    def watch_count(self) -> int:
        """The number of open WatchStock streams."""
        return self.hub.size

    async def stop(self, grace: float) -> None:
        """Drain: NOT_SERVING, end every watch with UNAVAILABLE (a watch never
        ends on its own), then let the other in-flight calls finish for up to
        grace seconds, and close the database."""
        try:
            await self.set_serving(False)
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
            await self.hub.close()
            await super().stop(grace)
        finally:
            await self.store.close()


async def create_inventory_server(
    address: str,
    db_path: str | Path,
    *,
    seed_file: str | Path,
    schema_file: str | Path,
    reservation_ttl_seconds: float,
    logger: logging.Logger | None = None,
    sweep_interval: float | None = None,
    tls: Tls | None = None,
) -> InventoryServer:
    """Open (create, migrate, seed) the database, then build, bind and start
    the server; port 0 picks a free port.

    sweep_interval overrides how often overdue reservations are swept
    (default: sweep_interval_seconds of the time to live); 0 turns the sweep
    off, leaving only the expiry every write transaction does.
    """
    logger = logger or logging.getLogger("shop.inventory")
    ttl_ms = ttl_ms_of(reservation_ttl_seconds)
    if ttl_ms <= 0:
        raise ValueError(f"the reservation time to live must be positive, got {reservation_ttl_seconds} s")
    store = await InventoryStore.open(db_path, seed_file=seed_file, schema_file=schema_file)
    hub = StockWatchHub(store, logger)
    servicer = InventoryService(store, hub, ttl_ms)
    service = Service(SERVICE_NAME, lambda server: pb_grpc.add_InventoryServiceServicer_to_server(servicer, server))
    try:
        running = await create_server(address, [service], logger, tls=tls)
    except BaseException:
        await hub.close()
        await store.close()
        raise
    WATCHERS.set_function(lambda: hub.size)
    interval = sweep_interval_seconds(ttl_ms) if sweep_interval is None else sweep_interval
    sweeper = asyncio.create_task(_sweep(store, logger, interval), name="inventory-sweeper")
    return InventoryServer(
        server=running.server,
        port=running.port,
        health=running.health,
        names=running.names,
        store=store,
        hub=hub,
        sweeper=sweeper,
    )


async def _sweep(store: InventoryStore, logger: logging.Logger, interval: float) -> None:
    """Expire overdue reservations every interval seconds (never when interval is 0)."""
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            expired = await store.expire_due()
        except Exception:
            logger.exception("reservation sweep failed")
            continue
        if expired > 0:
            EXPIRED.inc(expired)
            logger.debug("expired reservations", extra={"expired": expired})
