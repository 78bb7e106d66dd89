"""Shared support of every contract suite: asserting on the google.rpc.Status a
failed call carried (decoded by the one decoder,
shop_services.common.errors.decode_error, which fails with everything that was
seen so a failing test says what the implementation answered), raw calls,
interactive streams, seed data and money."""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from google.type import money_pb2

from shop_services.common.config import find_repo_file
from shop_services.common.errors import ErrorDetails, decode_error

_SEED_FILE = find_repo_file("data/products.json", Path(__file__).parent)
assert _SEED_FILE is not None, "the contract suites run inside the repository"
SEED_FILE: Path = _SEED_FILE
# The size of the oversized field: over gRPC's default 4 MiB receive limit.
OVERSIZED_BYTES = 5 * 1024 * 1024
# Bytes that no protobuf parser accepts: field 1, length-delimited, claims
# 100 bytes and carries 3.
MALFORMED = b"\x0a\x64abc"


def fails(call: Callable[[], Any]) -> ErrorDetails:
    """Run call, which must fail with an RpcError; return what it carried."""
    try:
        result = call()
    except grpc.RpcError as err:
        return decode_error(err)
    raise AssertionError(f"expected the call to fail, but it succeeded with:\n{result}")


def assert_code(seen: ErrorDetails, code: grpc.StatusCode | Iterable[grpc.StatusCode]) -> None:
    codes = {code} if isinstance(code, grpc.StatusCode) else set(code)
    assert seen.code in codes, f"expected {' or '.join(sorted(c.name for c in codes))}, got:\n  {seen.describe()}"


# A call whose own deadline ended it. The client reports DEADLINE_EXCEEDED;
# but a server that resets the stream at its copy of the deadline (grpc-go
# does, with RST_STREAM CANCEL) can beat the client's timer on a loaded
# machine, and the client then reports CANCELLED. Either way the call ended
# promptly at its deadline, which is what these tests are about.
DEADLINE_ENDED = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def assert_deadline_ended(seen: ErrorDetails) -> None:
    """The call was ended by its deadline (see DEADLINE_ENDED), not by anything else.

    Through Envoy the same server-side reset reaches the caller as Envoy
    relays it: before any response header, UNAVAILABLE "... reset before
    headers ... remote reset"; on a stream that already answered, a reset of
    the caller's stream (INTERNAL "... RST_STREAM ..."). Both are accepted,
    and only with those messages: anything else is a real failure.
    """
    if seen.code == grpc.StatusCode.UNAVAILABLE and "remote reset" in seen.message:
        return
    if seen.code == grpc.StatusCode.INTERNAL and "RST_STREAM" in seen.message:
        return
    assert_code(seen, DEADLINE_ENDED)


def assert_bad_request(seen: ErrorDetails, *paths: str) -> None:
    """INVALID_ARGUMENT whose BadRequest names exactly these field paths (in any order)."""
    assert_code(seen, grpc.StatusCode.INVALID_ARGUMENT)
    assert seen.status is not None, f"no google.rpc.Status:\n  {seen.describe()}"
    assert sorted(seen.field_paths) == sorted(paths), (
        f"expected BadRequest field paths {sorted(paths)}, got:\n  {seen.describe()}"
    )
    assert seen.message.strip(), f"the status message is empty:\n  {seen.describe()}"


def assert_error_info(
    seen: ErrorDetails,
    code: grpc.StatusCode,
    reason: str,
    domain: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """code, with an ErrorInfo of this reason and domain (and these metadata entries)."""
    assert_code(seen, code)
    assert (seen.reason, seen.domain) == (reason, domain), (
        f"expected ErrorInfo reason={reason!r} domain={domain!r}, got:\n  {seen.describe()}"
    )
    for key, value in (metadata or {}).items():
        assert key in seen.metadata, f"expected ErrorInfo metadata key {key!r}, got:\n  {seen.describe()}"
        if "," in value or "," in seen.metadata[key]:
            assert sorted(seen.metadata[key].split(",")) == sorted(value.split(",")), (
                f"expected ErrorInfo metadata {key}={value!r} (any order), got:\n  {seen.describe()}"
            )
        else:
            assert seen.metadata[key] == value, (
                f"expected ErrorInfo metadata {key}={value!r}, got:\n  {seen.describe()}"
            )


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
