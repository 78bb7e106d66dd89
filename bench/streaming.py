"""Server-streaming throughput: WatchStock messages per second under writes.

WatchStock is a change feed, so its messages come only as fast as stock
changes. The measurement drives the changes itself:

- W watchers each open WatchStock on the same SKUs (every catalog SKU but the
  one the order scenario uses) and wait for their initial snapshot;
- one writer sends ImportStock streams to the implementation being measured,
  back to back, each setting every watched SKU's on_hand to a value no
  earlier write set, so
  every item is one change and W watch messages;
- messages/s is the number of change messages the watchers received, divided
  by the time from the first write to the last message (the watchers are
  given up to a few seconds after the last write to catch up).

The client is Python (grpc.aio, protobuf's C++ runtime) on the same two cores
as the servers; it decodes tens of thousands of messages a second, more than
any implementation sent here, but it does take CPU from them.
A failed call (a watcher's stream ending with an error, an ImportStock that is
not OK) fails the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc

from bench.errors import BenchError

CATCH_UP_SECONDS = 5.0
# How long the watchers' initial snapshots may take (a thousand streams open one by one).
SNAPSHOT_SECONDS = 30.0


@dataclass(frozen=True)
class StreamResult:
    """What one streaming run measured."""

    watchers: int
    writes: int  # ImportStock calls
    changes: int  # SKU updates written
    expected: int  # change messages the watchers should receive (changes x watchers)
    received: int
    seconds: float
    # Change latency: from the start of the ImportStock that wrote a value to
    # a watcher receiving it, milliseconds, by percentile (50, 90, 99).
    latency_ms: dict[int, float] = field(default_factory=dict)

    @property
    def messages_per_second(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "watchers": self.watchers,
            "writes": self.writes,
            "changes": self.changes,
            "expected": self.expected,
            "received": self.received,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.messages_per_second, 1),
            "changes_per_second": round(self.changes_per_second, 1),
            "latency_ms": {f"p{p}": round(v, 3) for p, v in self.latency_ms.items()},
        }


async def _watch(
    stub: pb_grpc.InventoryServiceStub,
    skus: list[str],
    metadata: tuple[tuple[str, str], ...],
    ready: asyncio.Event,
    counts: list[int],
    index: int,
    last_message: list[float],
    sent: dict[int, float],
    latencies: list[float],
) -> None:
    call = stub.WatchStock(pb.WatchStockRequest(skus=skus), metadata=metadata)
    initial = 0
    try:
        async for message in call:
            if message.initial:
                initial += 1
                if initial == len(skus):
                    ready.set()
                continue
            counts[index] += 1
            now = last_message[0] = time.monotonic()
            written = sent.get(message.level.on_hand)
            if written is not None:
                latencies.append(now - written)
    except asyncio.CancelledError:
        call.cancel()
        raise
    except grpc.aio.AioRpcError as err:
        raise BenchError(f"WatchStock ended with {err.code().name}: {err.details()}") from None
    raise BenchError("WatchStock ended by the server while the bench was watching")


async def measure(
    watch_addr: str,
    write_addr: str,
    open_channel: Callable[..., grpc.aio.Channel],
    skus: list[str],
    *,
    watchers: int,
    seconds: float,
    metadata: tuple[tuple[str, str], ...],
    first_value: int,
    watchers_per_channel: int = 0,
) -> StreamResult:
    """Watch skus on watch_addr with `watchers` streams while writing to write_addr for `seconds`.

    The watchers share one channel, or open one per watchers_per_channel of
    them when that is set (a server caps the streams of one connection).
    """
    per_channel = watchers_per_channel or watchers
    count = -(-watchers // per_channel)
    # Each its own connection: grpc shares one between channels to the same address unless told not to.
    own = (("grpc.use_local_subchannel_pool", 1),) if count > 1 else ()
    watch_channels = [open_channel(watch_addr, options=own) for _ in range(count)]
    async with open_channel(write_addr) as write_channel:
        write_stub = pb_grpc.InventoryServiceStub(write_channel)
        counts = [0] * watchers
        last_message = [0.0]
        sent: dict[int, float] = {}
        latencies: list[float] = []
        ready = [asyncio.Event() for _ in range(watchers)]
        tasks = [
            asyncio.create_task(
                _watch(
                    pb_grpc.InventoryServiceStub(watch_channels[i // per_channel]),
                    skus,
                    metadata,
                    ready[i],
                    counts,
                    i,
                    last_message,
                    sent,
                    latencies,
                )
            )
            for i in range(watchers)
        ]
        try:
            snapshot_deadline = time.monotonic() + SNAPSHOT_SECONDS
            while not all(event.is_set() for event in ready):
                for task in tasks:
                    if task.done():
                        task.result()  # raises the watcher's BenchError
                if time.monotonic() > snapshot_deadline:
                    raise BenchError(
                        f"WatchStock on {watch_addr}: the initial snapshots of {watchers} watchers "
                        f"did not arrive within {SNAPSHOT_SECONDS:g} s"
                    )
                await asyncio.sleep(0.01)
            writes = 0
            start = time.monotonic()
            stop = start + seconds
            while time.monotonic() < stop:
                value = (first_value + writes) % 1_000_000
                items = [pb.ImportStockRequest(sku=sku, on_hand=value) for sku in skus]
                sent[value] = time.monotonic()
                try:
                    await write_stub.ImportStock(iter(items), metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError as err:
                    raise BenchError(f"ImportStock on {write_addr}: {err.code().name}: {err.details()}") from None
                writes += 1
                # A watcher that failed stops the run now, not at the end.
                for task in tasks:
                    if task.done():
                        task.result()
            expected = writes * len(skus) * watchers
            catch_up = time.monotonic() + CATCH_UP_SECONDS
            # Polling: the watchers only count, and the bound is short.
            while sum(counts) < expected and time.monotonic() < catch_up:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            end = max(last_message[0], start)
            return StreamResult(
                watchers=watchers,
                writes=writes,
                changes=writes * len(skus),
                expected=expected,
                received=sum(counts),
                seconds=end - start,
                latency_ms=_percentiles(latencies),
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in watch_channels:
                await channel.close()


def _percentiles(seconds: list[float]) -> dict[int, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {p: ordered[min(len(ordered) - 1, len(ordered) * p // 100)] * 1000 for p in (50, 90, 99)}
