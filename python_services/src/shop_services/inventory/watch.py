"""StockWatchHub fans stock changes out to WatchStock streams.

As the contract asks (WatchStock in inventory_service.proto, the watch tests
of tests/contract/test_inventory.py): changes this process commits arrive from the
store right after each commit; changes another process commits to the same
database file (a second implementation during a live swap) are found by
polling PRAGMA data_version every POLL_INTERVAL_SECONDS while anyone watches,
then re-reading the watched SKUs. A watch sends a level only when it differs
from the last one it sent for that SKU.

Every level carries the sequence number of the database read it came from
(see store.StockSnapshot), and a watch ignores a read older than the newest it
has applied for a SKU, so a slow poll can never send a stale level after a
newer one. A watch is registered before its initial levels are read and holds
the changes that arrive meanwhile until the initial levels are sent, so no
change can fall between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from shop_services.inventory import errors
from shop_services.inventory.store import InventoryStore, StockRow, StockSnapshot

# How often the hub looks for commits by other processes while anyone watches.
POLL_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True)
class WatchEvent:
    """One message of a WatchStock stream."""

    level: StockRow
    initial: bool


class Watch:
    """One WatchStock stream: the SKUs it follows and the events to send."""

    def __init__(self, skus: Sequence[str]) -> None:
        self.skus = list(dict.fromkeys(skus))
        # Events for the stream; None ends it because the server is draining.
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        # For each SKU, the seq of the newest read applied and the level sent.
        self._last: dict[str, tuple[int, StockRow]] = {}
        # Changes seen before the initial levels were sent; None once they were.
        self._pending: list[StockSnapshot] | None = []

    def start(self, initial: StockSnapshot, requested: Sequence[str]) -> None:
        """Queue one initial message per requested SKU, then the held changes."""
        for sku in requested:
            level = initial.levels[sku]
            self._last[sku] = (initial.seq, level)
            self._queue.put_nowait(WatchEvent(level, initial=True))
        held, self._pending = self._pending or [], None
        for snapshot in held:
            self.offer(snapshot)

    def offer(self, snapshot: StockSnapshot) -> None:
        """Queue the levels of watched SKUs that changed since the last one sent."""
        if self._pending is not None:
            self._pending.append(snapshot)
            return
        for sku in self.skus:
            level = snapshot.levels.get(sku)
            if level is None:
                continue
            last = self._last.get(sku)
            if last is not None and snapshot.seq <= last[0]:
                continue
            self._last[sku] = (snapshot.seq, level)
            if last is None or last[1] != level:
                self._queue.put_nowait(WatchEvent(level, initial=False))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[WatchEvent]:
        """The stream's events until the client cancels; UNAVAILABLE when the server drains."""
        while True:
            event = await self._queue.get()
            if event is None:
                raise errors.shutting_down()
            yield event


class StockWatchHub:
    """The open watches of one server, fed by the store and the data_version poll."""

    def __init__(
        self, store: InventoryStore, logger: logging.Logger, poll_interval: float = POLL_INTERVAL_SECONDS
    ) -> None:
        self._store = store
        self._logger = logger
        self._poll_interval = poll_interval
        # The open watches; the poll task runs only while there are some.
        self._watches: set[Watch] = set()
        self._poller: asyncio.Task[None] | None = None
        self._last_data_version = 0
        self._closed = False
        self._stop_listening = store.on_change(self._dispatch)

    @property
    def size(self) -> int:
        """The number of open watches (tests check that cancelled ones leave)."""
        return len(self._watches)

    async def watch(self, skus: Sequence[str]) -> Watch:
        """Open a watch: its initial levels (after expiring overdue reservations)
        are queued first. Raises SKU_NOT_FOUND, before anything is queued, when
        a SKU is unknown; the caller must remove() the watch it gets."""
        if self._closed:
            raise errors.shutting_down()
        watch = Watch(skus)
        self._watches.add(watch)
        try:
            initial = await self._store.get_stock(skus)
        except BaseException:
            self.remove(watch)
            raise
        watch.start(initial, skus)
        if self._poller is None and not self._closed and watch in self._watches:
            self._last_data_version = initial.data_version
            self._poller = asyncio.create_task(self._poll(), name="inventory-watch-poll")
        return watch

    def remove(self, watch: Watch) -> None:
        self._watches.discard(watch)
        if not self._watches and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def close(self) -> None:
        """End every watch with UNAVAILABLE and stop listening; used when draining."""
        self._closed = True
        self._stop_listening()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        for watch in list(self._watches):
            watch.close()
        self._watches.clear()

    def _dispatch(self, snapshot: StockSnapshot) -> None:
        for watch in list(self._watches):
            watch.offer(snapshot)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            skus = list(dict.fromkeys(sku for watch in self._watches for sku in watch.skus))
            try:
                snapshot = await self._store.poll(skus, self._last_data_version)
            except Exception:
                self._logger.exception("watch poll failed")
                continue
            if snapshot is not None:
                self._last_data_version = snapshot.data_version
                self._dispatch(snapshot)
