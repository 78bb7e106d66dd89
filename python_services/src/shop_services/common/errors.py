"""google.rpc.Status helpers, so every language sends the same error details.

Bad input is INVALID_ARGUMENT with a BadRequest (one violation per field);
business failures carry an ErrorInfo with a documented reason and domain. The
status travels in the grpc-status-details-bin trailer (AIP-193).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def error_reason(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason a peer sent with its error, or None."""
    status = details_of(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return None


def abort_internal() -> NoReturn:
    """Raise the generic INTERNAL error used when a handler fails unexpectedly."""
    raise RpcError(grpc.StatusCode.INTERNAL, "internal error; see the service log")


__all__ = [
    "RpcError",
    "Violations",
    "abort_internal",
    "bad_request",
    "code_pb2",
    "details_of",
    "error_info",
    "error_reason",
]
