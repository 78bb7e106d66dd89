"""google.rpc.Status helpers, so every language sends the same error details.

Bad input is INVALID_ARGUMENT with a BadRequest (one violation per field);
business failures carry an ErrorInfo with a documented reason and domain. The
status travels in the grpc-status-details-bin trailer (AIP-193).

decode_error is the one decoder of that trailer, for the services that call
others (the orders saga) and for every Python test suite alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class RpcError(Exception):
    """An RPC outcome with rich details, raised anywhere inside a handler.

    The logging interceptor turns it into the call's status, so domain code
    can fail without holding the call's context.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_status(self) -> grpc.Status:
        """The grpc.Status, details packed as google.protobuf.Any."""
        packed = []
        for detail in self.details:
            any_msg = any_pb2.Any()
            any_msg.Pack(detail)  # type: ignore[arg-type]
            packed.append(any_msg)
        proto = status_pb2.Status(code=_code_number(self.code), message=self.message, details=packed)
        status: grpc.Status = rpc_status.to_status(proto)
        return status


def _code_number(code: grpc.StatusCode) -> int:
    number = code.value[0]
    assert isinstance(number, int)
    return number


def bad_request(violations: Iterable[tuple[str, str]], message: str | None = None) -> RpcError:
    """INVALID_ARGUMENT with one BadRequest field violation per (field, description)."""
    items = [error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
    if not items:
        raise ValueError("bad_request needs at least one violation")
    text = message or "; ".join(f"{v.field}: {v.description}" for v in items)
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, text, error_details_pb2.BadRequest(field_violations=items))


def error_info(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    domain: str,
    metadata: Mapping[str, str] | None = None,
) -> RpcError:
    """A business failure: the code, a sentence, and an ErrorInfo{reason, domain}."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {}))
    return RpcError(code, message, info)


class Violations:
    """Collects field violations while validating a request."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise bad_request(self.items)


def details_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """Decode the google.rpc.Status a peer sent, or None."""
    status: status_pb2.Status | None = rpc_status.from_call(error)
    return status


@dataclass
class ErrorDetails:
    """What a failed call carried: its code, message and decoded details."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status | None = None
    field_paths: list[str] = field(default_factory=list)
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    detail_types: list[str] = field(default_factory=list)
    decode_error: str | None = None

    def describe(self) -> str:
        """Everything seen, for an assertion message."""
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

    def __str__(self) -> str:
        return self.describe()


def decode_error(error: grpc.RpcError) -> ErrorDetails:
    """Decode a failed call's google.rpc.Status, BadRequest and ErrorInfo.

    A trailer that cannot be decoded (garbled, or disagreeing with the call's
    code or message) is recorded in decode_error rather than raised: for a
    caller it is a finding about the peer, not a crash of its own.
    """
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    details = ErrorDetails(code=code, message=message)
    try:
        status = details_of(error)
    except ValueError as exc:  # the code or message disagree with the trailer
        details.decode_error = str(exc)
        return details
    except Exception as exc:  # noqa: BLE001 - a garbled trailer is a finding, not a crash
        details.decode_error = f"{type(exc).__name__}: {exc}"
        return details
    details.status = status
    if status is None:
        return details
    for detail in status.details:
        details.detail_types.append(detail.TypeName())
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            details.field_paths.extend(v.field for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            details.reason, details.domain = info.reason, info.domain
            details.metadata = dict(info.metadata)
    return details


def error_reason(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason a peer sent with its error, or None."""
    return decode_error(error).reason


def abort_internal() -> NoReturn:
    """Raise the generic INTERNAL error used when a handler fails unexpectedly."""
    raise RpcError(grpc.StatusCode.INTERNAL, "internal error; see the service log")


__all__ = [
    "ErrorDetails",
    "RpcError",
    "Violations",
    "abort_internal",
    "bad_request",
    "code_pb2",
    "decode_error",
    "details_of",
    "error_info",
    "error_reason",
]
