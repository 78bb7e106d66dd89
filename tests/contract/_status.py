"""Reading google.rpc.Status out of a failed call, and asserting on it.

Every service puts a google.rpc.Status in the grpc-status-details-bin trailer
(docs/conventions.md). These helpers decode it and fail with everything that
was seen (code, message, details), so a failing contract test says what the
implementation actually answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass
class SeenError:
    """What a failed call carried: its code, message and decoded details."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status | None
    field_paths: list[str] = field(default_factory=list)
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    detail_types: list[str] = field(default_factory=list)
    decode_error: str | None = None

    def describe(self) -> str:
        lines = [f"code={self.code.name} message={self.message!r}"]
        if self.decode_error:
            lines.append(f"grpc-status-details-bin could not be decoded: {self.decode_error}")
        elif self.status is None:
            lines.append("no grpc-status-details-bin trailer (no google.rpc.Status)")
        else:
            lines.append(f"details: {self.detail_types or 'none'}")
            if self.field_paths:
                lines.append(f"BadRequest field paths: {self.field_paths}")
            if self.reason is not None:
                lines.append(f"ErrorInfo: reason={self.reason!r} domain={self.domain!r} metadata={self.metadata}")
        return "\n  ".join(lines)


def decode(err: grpc.RpcError) -> SeenError:
    """Decode an RpcError's google.rpc.Status, BadRequest and ErrorInfo."""
    code = err.code()  # type: ignore[attr-defined]
    message = err.details() or ""  # type: ignore[attr-defined]
    seen = SeenError(code=code, message=message, status=None)
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError as exc:  # code or message disagree with the trailer
        seen.decode_error = str(exc)
        return seen
    except Exception as exc:  # noqa: BLE001 - a garbled trailer is a finding, not a crash
        seen.decode_error = f"{type(exc).__name__}: {exc}"
        return seen
    seen.status = status
    if status is None:
        return seen
    for detail in status.details:
        seen.detail_types.append(detail.TypeName())
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            seen.field_paths.extend(v.field for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            seen.reason, seen.domain = info.reason, info.domain
            seen.metadata = dict(info.metadata)
    return seen


def fails(call: Callable[[], Any]) -> SeenError:
    """Run call, which must fail with an RpcError; return what it carried."""
    try:
        result = call()
    except grpc.RpcError as err:
        return decode(err)
    raise AssertionError(f"expected the call to fail, but it succeeded with:\n{result}")


def assert_code(seen: SeenError, code: grpc.StatusCode | Iterable[grpc.StatusCode]) -> None:
    codes = {code} if isinstance(code, grpc.StatusCode) else set(code)
    assert seen.code in codes, f"expected {' or '.join(sorted(c.name for c in codes))}, got:\n  {seen.describe()}"


# A call whose own deadline ended it. The client reports DEADLINE_EXCEEDED;
# but a server that resets the stream at its copy of the deadline (grpc-go
# does, with RST_STREAM CANCEL) can beat the client's timer on a loaded
# machine, and the client then reports CANCELLED. Either way the call ended
# promptly at its deadline, which is what these tests are about.
DEADLINE_ENDED = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def assert_deadline_ended(seen: SeenError) -> None:
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


def assert_bad_request(seen: SeenError, *paths: str) -> None:
    """INVALID_ARGUMENT whose BadRequest names exactly these field paths (in any order)."""
    assert_code(seen, grpc.StatusCode.INVALID_ARGUMENT)
    assert seen.status is not None, f"no google.rpc.Status:\n  {seen.describe()}"
    assert sorted(seen.field_paths) == sorted(paths), (
        f"expected BadRequest field paths {sorted(paths)}, got:\n  {seen.describe()}"
    )
    assert seen.message.strip(), f"the status message is empty:\n  {seen.describe()}"


def assert_error_info(
    seen: SeenError,
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
