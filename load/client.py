"""How a load user reaches the shop, and how each call is counted.

- `Target`: the address the load goes to. By default Envoy's public listener on
  127.0.0.1 at the port deploy/stack.toml gives it; anything that does not
  resolve to loopback is refused unless the caller allows it on purpose.
- `connect`: the one place that decides how a user talks to the edge: TLS
  trusting the stack's CA (no client certificate: customers have tokens, not
  certificates), and on every call `authorization: Bearer <token>` for the
  user's own customer id, from the stack's local issuer (docs/security.md).
  `local_stack` finds that stack's run directory (SHOP_RUN_DIR, else .run).
- `Recorder`: times one RPC and reports it to Locust as a request event of
  type "grpc", named after the method, with the failure (the status code and
  message) when there is one; `order_outcome` says how a placed order counts.
  load/README.md says how outcomes are counted.

Nothing here imports Locust (which patches the process for gevent), so the
launcher (`python -m load`) and the tests can use it too.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from shop.orders.v1 import order_service_pb2 as orders_pb
from shopstack import channels, topology  # deploy/ on PYTHONPATH, as every Makefile target sets it
from shopstack.stack import Stack, default_stack

USER_AGENT = "shop-load (locust)"


class TargetError(ValueError):
    """The target is malformed, does not resolve, or is not on this machine."""


@dataclass(frozen=True)
class Target:
    """A host and port to send the load to."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """The address as gRPC wants it ("[::1]:8080" for IPv6 literals)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """Read HOST:PORT (or [IPV6]:PORT)."""
        host, sep, port = text.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TargetError(f"target {text!r} is not HOST:PORT (for example 127.0.0.1:8080)")
        return cls(host, int(port))

    def check_local(self, allow_remote: bool = False) -> None:
        """Refuse a target that is not loopback, unless allow_remote says it is on purpose."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            raise TargetError(f"target {self.address} does not resolve: {err.strerror}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        remote = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
        if remote and not allow_remote:
            raise TargetError(
                f"target {self.address} resolves to {', '.join(remote)}, which is not loopback: the load "
                "generator only targets the local edge. Pass --allow-remote-target (make load ALLOW_REMOTE=1) "
                "to load a stack elsewhere on purpose."
            )


def default_target() -> Target:
    """Envoy's public listener of the local stack, from deploy/stack.toml."""
    return Target("127.0.0.1", topology.load().public_port)


def local_stack() -> Stack:
    """The stack whose CA and token issuer the load uses: `make up`'s (.run), or SHOP_RUN_DIR's."""
    stack = default_stack()
    if not stack.certs.ca.exists() or not stack.certs.jwt_key.exists():
        raise TargetError(
            f"no certificates in {stack.certs.directory}: start the shop there first (make up), "
            "or point SHOP_RUN_DIR at the run directory of the stack to load"
        )
    return stack


@dataclass
class Connection:
    """One user's channel to the edge, and the metadata its calls carry."""

    channel: grpc.Channel
    sign_in: Callable[[], str]  # a fresh token for the user's customer id
    token_ttl_seconds: float
    _token: str = ""
    _signed_at: float = -math.inf

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The customer's token, renewed once half its lifetime has passed (a run may outlast a token)."""
        now = time.monotonic()
        if now - self._signed_at >= self.token_ttl_seconds / 2:
            self._token, self._signed_at = self.sign_in(), now
        return (("authorization", f"Bearer {self._token}"),)

    def close(self) -> None:
        self.channel.close()


def connect(target: Target, customer_id: str, stack: Stack) -> Connection:
    """Open the channel one load user keeps for its whole life, signed in as customer_id.

    This is the only place that knows how the edge is reached: TLS trusting
    the stack's CA, and a customer token from the stack's local issuer.
    """
    credentials = channels.credentials(stack.certs, identity=None)
    channel = grpc.secure_channel(target.address, credentials, options=[("grpc.primary_user_agent", USER_AGENT)])
    return Connection(
        channel=channel,
        sign_in=lambda: stack.token(customer_id),
        token_ttl_seconds=stack.topology.security.token_ttl_seconds,
    )


class RpcFailure(Exception):
    """A gRPC error nobody asked for: reported under the method, by status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code

    def __repr__(self) -> str:  # Locust groups and shows failures by repr
        return str(self)


class WrongAnswer(Exception):
    """An answer that breaks what the proto promises, or an order that failed for a reason nobody expected."""

    def __repr__(self) -> str:
        return str(self)


@dataclass
class Rpc:
    """What a caller learns about one call while it runs, to be reported when it ends."""

    method: str
    # A named outcome that is a success but is counted apart, e.g. "FAILED CARD_DECLINED".
    outcome: str | None = None
    response_length: int = 0
    # When set, the response time to report (e.g. the time to a stream's first messages).
    response_time_ms: float | None = None

    @property
    def name(self) -> str:
        return self.method if self.outcome is None else f"{self.method} [{self.outcome}]"


def status_code(err: grpc.RpcError) -> grpc.StatusCode:
    return err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN


def status_details(err: grpc.RpcError) -> str:
    return (err.details() or "") if isinstance(err, grpc.Call) else repr(err)


class Recorder:
    """Reports RPCs to Locust's request event."""

    def __init__(self, fire: Callable[..., Any]) -> None:
        self._fire = fire

    @contextmanager
    def rpc(self, method: str, expected: Mapping[grpc.StatusCode, str] | None = None) -> Iterator[Rpc]:
        """Time the calls made in the block and report them as one request.

        A gRPC error whose code is in `expected` is the answer the block asked
        for (an unknown id's NOT_FOUND): a success, counted under
        "method [outcome]". Any other gRPC error, or a WrongAnswer raised in
        the block, is a failure under the method's name. Anything else (a bug
        in the locustfile, or the user being stopped) is not counted.
        """
        rpc = Rpc(method)
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            yield rpc
        except grpc.RpcError as err:
            code = status_code(err)
            if expected is not None and code in expected:
                rpc.outcome = expected[code]
            else:
                failure = RpcFailure(code, status_details(err))
        except WrongAnswer as err:
            failure = err
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._fire(
            request_type="grpc",
            name=rpc.method if failure is not None else rpc.name,
            response_time=rpc.response_time_ms if rpc.response_time_ms is not None else elapsed_ms,
            response_length=rpc.response_length,
            exception=failure,
            context={},
        )


TERMINAL_STATES = (orders_pb.ORDER_STATE_CONFIRMED, orders_pb.ORDER_STATE_FAILED)


def order_state(order: orders_pb.Order) -> str:
    return orders_pb.OrderState.Name(order.state).removeprefix("ORDER_STATE_")


def order_reason(order: orders_pb.Order) -> str:
    return orders_pb.OrderFailureReason.Name(order.failure_reason).removeprefix("ORDER_FAILURE_REASON_")


def order_outcome(order: orders_pb.Order, request_id: str, allowed: set[str]) -> str | None:
    """How an order PlaceOrder returned is counted.

    None for a CONFIRMED order (the method's own row), "FAILED <REASON>" (or
    "COMPENSATING <REASON>") for an order that failed for a reason in
    `allowed`: a success, counted apart. Anything else, including CONFIRMED
    when it is not allowed (a declined card), raises WrongAnswer: a failure.
    """
    if order.request_id != request_id:
        raise WrongAnswer(f"PlaceOrder for request_id {request_id} returned the order of {order.request_id!r}")
    state, reason = order_state(order), order_reason(order)
    if order.state == orders_pb.ORDER_STATE_CONFIRMED and "CONFIRMED" in allowed:
        return None
    failed = (orders_pb.ORDER_STATE_FAILED, orders_pb.ORDER_STATE_COMPENSATING)
    if order.state in failed and reason in allowed:
        return f"{state} {reason}"
    what = state if order.failure_reason == orders_pb.ORDER_FAILURE_REASON_UNSPECIFIED else f"{state} {reason}"
    detail = f": {order.failure_message}" if order.failure_message else ""
    raise WrongAnswer(f"PlaceOrder ended {what}{detail}")
