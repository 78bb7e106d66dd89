"""The inventory's errors, as the contract fixes them: the code, ErrorInfo
reason, domain and metadata documented in inventory_service.proto, the
BadRequest field paths of docs/conventions.md, and the messages every
implementation sends (tests/contract/test_inventory.py holds each
implementation to them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import grpc

from shop_services.common.errors import RpcError, bad_request, error_info

# The ErrorInfo domain of every inventory business error.
DOMAIN = "inventory.shop.example"

Reason = Literal[
    "OUT_OF_STOCK",
    "SKU_NOT_FOUND",
    "RESERVATION_NOT_FOUND",
    "RESERVATION_EXPIRED",
    "RESERVATION_RELEASED",
    "RESERVATION_COMMITTED",
    "REQUEST_ID_REUSED",
]

# The status code inventory_service.proto documents for each reason.
REASON_CODES: Mapping[Reason, grpc.StatusCode] = {
    "OUT_OF_STOCK": grpc.StatusCode.FAILED_PRECONDITION,
    "SKU_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "RESERVATION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "RESERVATION_EXPIRED": grpc.StatusCode.FAILED_PRECONDITION,
    "RESERVATION_RELEASED": grpc.StatusCode.FAILED_PRECONDITION,
    "RESERVATION_COMMITTED": grpc.StatusCode.FAILED_PRECONDITION,
    "REQUEST_ID_REUSED": grpc.StatusCode.ALREADY_EXISTS,
}


def business_error(reason: Reason, message: str, metadata: Mapping[str, str] | None = None) -> RpcError:
    """The reason's documented code with an ErrorInfo{reason, inventory domain, metadata}."""
    return error_info(REASON_CODES[reason], message, reason=reason, domain=DOMAIN, metadata=metadata)


def invalid_argument(violations: Iterable[tuple[str, str]]) -> RpcError:
    """INVALID_ARGUMENT with one field violation per (field, description)."""
    items = list(violations)
    summary = "; ".join(f"{field}: {description}" for field, description in items)
    return bad_request(items, f"The request is invalid: {summary}.")


def sku_not_found(skus: Iterable[str]) -> RpcError:
    listed = list(skus)
    return business_error(
        "SKU_NOT_FOUND",
        f"These SKUs have never been stocked: {', '.join(listed)}.",
        {"skus": ",".join(listed)},
    )


def reservation_not_found(reservation_id: str) -> RpcError:
    return business_error("RESERVATION_NOT_FOUND", f"No reservation has the id {reservation_id}.")


def reservation_expired(reservation_id: str) -> RpcError:
    return business_error(
        "RESERVATION_EXPIRED",
        f"Reservation {reservation_id} expired before it was committed and its stock was returned; reserve again.",
    )


def reservation_released(reservation_id: str) -> RpcError:
    return business_error(
        "RESERVATION_RELEASED",
        f"Reservation {reservation_id} was released and can no longer be committed; reserve again.",
    )


def reservation_committed(reservation_id: str) -> RpcError:
    return business_error(
        "RESERVATION_COMMITTED",
        f"Reservation {reservation_id} was committed and can no longer be released.",
    )


def request_id_reused(request_id: str) -> RpcError:
    return business_error(
        "REQUEST_ID_REUSED",
        f'request_id "{request_id}" was already used for a reservation with different lines; '
        "send a new request_id for a new reservation.",
    )


def database_busy() -> RpcError:
    """Another writer held the database past the busy timeout: safe to retry."""
    return RpcError(grpc.StatusCode.UNAVAILABLE, "The inventory database is busy; retry the call.")


def shutting_down() -> RpcError:
    """Ends a WatchStock stream when the server drains."""
    return RpcError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down; watch again.")
