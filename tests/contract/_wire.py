"""Helpers shared by every suite: raw calls, interactive streams, seed data, money."""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from google.type import money_pb2

from ._status import assert_code, fails

SEED_FILE = Path(__file__).resolve().parents[2] / "data" / "products.json"
# The size of the oversized field: over gRPC's default 4 MiB receive limit.
OVERSIZED_BYTES = 5 * 1024 * 1024
# Bytes that no protobuf parser accepts: field 1, length-delimited, claims
# 100 bytes and carries 3.
MALFORMED = b"\x0a\x64abc"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def seed() -> dict[str, Any]:
    """data/products.json: the catalog every implementation starts from."""
    return json.loads(SEED_FILE.read_text())


def money(m: money_pb2.Money) -> tuple[str, Decimal]:
    return m.currency_code, Decimal(m.units) + Decimal(m.nanos) / Decimal(10**9)


def seed_money(price: dict[str, Any]) -> tuple[str, Decimal]:
    return price["currency_code"], Decimal(price.get("units", 0)) + Decimal(price.get("nanos", 0)) / Decimal(10**9)


def raw_unary(channel: grpc.Channel, path: str, payload: bytes, timeout: float = 10.0) -> bytes:
    """Call path with payload as the serialized request, bypassing any stub."""
    call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(payload, timeout=timeout)


def check_unknown_method(channel: grpc.Channel, service: str) -> None:
    """A method the service does not have is UNIMPLEMENTED."""
    seen = fails(lambda: raw_unary(channel, f"/{service}/NoSuchMethod", b""))
    assert_code(seen, grpc.StatusCode.UNIMPLEMENTED)


def check_malformed(channel: grpc.Channel, path: str) -> None:
    """Bytes that are not a protobuf are refused the way gRPC refuses them."""
    seen = fails(lambda: raw_unary(channel, path, MALFORMED))
    # gRPC libraries answer a request they cannot deserialize with INTERNAL
    # (grpc-go, grpcio, grpc-js); INVALID_ARGUMENT would be as clear.
    assert_code(seen, (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT))


class Feeder:
    """A request iterator the test feeds one message at a time (for bidi and client streams)."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def send(self, message: Any) -> None:
        self._queue.put(message)

    def close(self) -> None:
        """Half-close: no more requests."""
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            message = self._queue.get()
            if message is self._END:
                return
            yield message
