"""Decoding the google.rpc.Status a failed call carried, for every service's tests."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class RichError:
    """What a failed call carried: its code, message and decoded details."""

    code: grpc.StatusCode
    message: str
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.code.name}: {self.message!r} reason={self.reason} domain={self.domain} "
            f"metadata={self.metadata} fields={self.fields}"
        )


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """Decode the grpc-status-details-bin trailer of a failed call."""
    status = rpc_status.from_call(error)
    result = RichError(code=error.code(), message=error.details() or "")
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason, result.domain, result.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.fields = [v.field for v in bad.field_violations]
    return result


async def fails(call: Awaitable[object]) -> RichError:
    """Await a call that must fail and decode its error."""
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return rich_error(exc)
    raise AssertionError(f"the call succeeded with {result}")
