"""Input no gRPC client sends: each call ends fast with an error, never OK, and the service carries on.

Raw HTTP/2 (tests/abuse/support.py) sends what gRPC libraries will not:

- through both Envoy listeners, for a public RPC of every service: a message
  whose compressed flag is 2, a compressed flag of 1 with no grpc-encoding, a
  frame shorter than its length prefix, and a length prefix over the 4 MiB
  limit. Envoy's frame check (grpc_field_extraction) refuses the first three
  with INVALID_ARGUMENT before any service sees them;
- to every implementation directly: the same four malformations, each of
  which must end within a few seconds with INVALID_ARGUMENT, INTERNAL or
  RESOURCE_EXHAUSTED; where the service's gRPC library cannot be made to
  refuse one (grpcio: a flag of 2 and a truncated frame; grpc-js: a flag of 2,
  and 1 without grpc-encoding) the case is an xfail(strict=True) naming the
  upstream issue, so a library that starts refusing it fails the test until
  the docs are updated;
- to every implementation directly: a string field that is not UTF-8
  (INTERNAL from every language; Node's decoder is made strict in its
  bootstrap);
- JSON paths with bad percent-encoding through the public listener: HTTP 400.

After each, a normal call to the same service succeeds. Every call speaks TLS
as a real client would: the public listener's calls carry a customer token
(OrderService needs one), the internal listener and the services' own ports
get the operator's certificate (mutual TLS; RBAC allows the operator every RPC).
"""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from e2e.support import Shop
from reliability import Outcome, record
from shopstack import topology
from shopstack.pki import OPERATOR
from shopstack.stack import Stack

from .support import Reply, call, grpc_frame, tls

# A public unary RPC per service, and its request with field 1 (a string) = "abc".
RPCS = {
    "catalog": "/shop.catalog.v1.CatalogService/GetProduct",
    "inventory": "/shop.inventory.v1.InventoryService/GetStock",
    "orders": "/shop.orders.v1.OrderService/GetOrder",
    "payments": "/shop.payments.v1.PaymentService/GetPayment",
}
GOOD = b"\x0a\x03abc"
NOT_UTF8 = b"\x0a\x02\xff\xfe"
# gRPC status codes a refused malformed call may end with.
REFUSED = {3: "INVALID_ARGUMENT", 8: "RESOURCE_EXHAUSTED", 13: "INTERNAL"}


def malformed(body: bytes) -> dict[str, bytes]:
    """The four malformations of one request message."""
    return {
        "compressed flag 2": grpc_frame(body, flag=2),
        "compressed flag 1, no grpc-encoding": grpc_frame(body, flag=1),
        "frame shorter than its length prefix": grpc_frame(body, claimed_length=100),
        "length prefix over the 4 MiB limit": grpc_frame(body, claimed_length=5 * 1024 * 1024),
    }


FRAMING = malformed(GOOD)


def route_timeout(stack: Stack, service: str) -> float:
    return stack.topology.services[service].timeout_seconds


def assert_refused(reply: Reply, what: str, within: float, expected: set[int] | None = None) -> None:
    allowed = expected or set(REFUSED)
    assert reply.grpc_status in allowed, f"{what}: {reply}"
    assert reply.seconds < within, f"{what} took longer than the route timeout ({within:g} s): {reply}"


def assert_still_serving(
    context: ssl.SSLContext, address: str, path: str, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    reply = call(address, path, grpc_frame(GOOD), tls=context, metadata=metadata, timeout=15)
    # A made-up id: NOT_FOUND (or OK for GetStock of an unknown SKU) is the service answering.
    assert reply.grpc_status in (0, 5), f"after the malformed call, a normal call got {reply}"


@pytest.mark.parametrize("listener", ["public", "internal"])
def test_bad_framing_is_refused_at_the_edge_at_once(reliability_stack: Stack, shop: Shop, listener: str) -> None:
    if listener == "public":
        address = reliability_stack.public_addr
        context = tls(reliability_stack.certs, None)
        metadata: tuple[tuple[str, str], ...] = (
            ("authorization", f"Bearer {reliability_stack.token('shopper-malformed')}"),
        )
    else:
        address = reliability_stack.internal_addr
        context = tls(reliability_stack.certs, OPERATOR)
        metadata = ()
    seen = []
    for service, path in RPCS.items():
        if listener == "public" and service == "payments":
            continue  # internal only
        for what, body in FRAMING.items():
            reply = call(
                address,
                path,
                body,
                tls=context,
                metadata=metadata,
                timeout=route_timeout(reliability_stack, service) + 5,
            )
            expected = {8, 3} if "limit" in what else {3}
            assert_refused(
                reply,
                f"{what} to {path} on the {listener} listener",
                route_timeout(reliability_stack, service),
                expected,
            )
            seen.append(reply.seconds)
        assert_still_serving(context, address, path, metadata)
    record(
        Outcome(
            f"bad gRPC framing through the {listener} listener",
            f"{len(seen)} calls: 4 kinds x every service",
            "INVALID_ARGUMENT (RESOURCE_EXHAUSTED for the oversized prefix)",
            f"slowest answer {max(seen):.2f} s; every service answered a normal call afterwards",
        )
    )


def test_a_string_that_is_not_utf8_is_refused_by_every_implementation(reliability_stack: Stack) -> None:
    context = tls(reliability_stack.certs, OPERATOR)
    seen = []
    for impl in reliability_stack.running_impls():
        if impl.service not in RPCS:
            continue
        address = f"127.0.0.1:{reliability_stack.topology.port_of(impl)}"
        path = RPCS[impl.service]
        within = route_timeout(reliability_stack, impl.service)
        reply = call(address, path, grpc_frame(NOT_UTF8), tls=context, timeout=within + 5)
        assert_refused(reply, f"a non-UTF-8 string to {impl.cluster}", within, {3, 13})
        assert_still_serving(context, address, path)
        seen.append(impl.cluster)
    record(
        Outcome(
            "a string field that is not UTF-8, to each implementation directly",
            ", ".join(seen),
            "INTERNAL (INVALID_ARGUMENT) from every one",
            "each answered a normal call afterwards",
        )
    )


# -- bad framing sent straight to each implementation (no Envoy in between) ----------

# What is sent to each implementation directly: an RPC for which a request read
# as empty is still a valid one, where the service has one (ListOrders: an
# empty request lists the orders), so a library that reads a malformed message
# as empty shows as OK rather than hiding behind the service's own validation.
DIRECT_RPCS = {
    **{service: (path, GOOD) for service, path in RPCS.items()},
    "orders": ("/shop.orders.v1.OrderService/ListOrders", b"\x08\x02"),  # page_size = 2
}
# Every implementation the reliability stack runs of the services in RPCS.
DIRECT = sorted(
    impl.cluster
    for name, service in topology.load().services.items()
    if name in RPCS
    for impl in service.implementations.values()
    if name == "inventory" or impl.lang == service.impl
)
# "Fast": a refused call answers in milliseconds; a bound well under every route timeout.
DIRECT_BOUND_SECONDS = 5.0
GRPCIO_FLAG = (
    "grpcio (grpc core, up to 1.85.3, the newest release) reads a message whose compressed flag is 2 as an "
    "empty request and answers it (grpc/grpc#14176, closed unfixed); grpc core's master refuses it "
    "(test/core/transport/chttp2/cardinality_test.cc, InvalidCompressionFlagFails), no grpcio release does yet"
)
GRPCIO_TRUNCATED = (
    "grpcio waits for the rest of a frame shorter than its length prefix even after the client half-closed, "
    "until the caller's deadline or cancellation; no server option or interceptor runs before the request "
    "message is read"
)
GRPC_JS_FLAG = (
    "grpc-js reads any compressed flag but 1 as uncompressed, and a flag of 1 without grpc-encoding as "
    "identity, and serves the call (grpc/grpc-node#2767, open); its interceptors see only the parsed message"
)
# (implementation language, malformation) that its gRPC library cannot be made to refuse: the edge's
# frame check (grpc_field_extraction) and mutual TLS are the defence, docs/reliability.md says so.
UPSTREAM = {
    ("python", "compressed flag 2"): GRPCIO_FLAG,
    ("python", "frame shorter than its length prefix"): GRPCIO_TRUNCATED,
    ("node", "compressed flag 2"): GRPC_JS_FLAG,
    ("node", "compressed flag 1, no grpc-encoding"): GRPC_JS_FLAG,
}


# Services whose direct RPC refuses an empty request (GetStock, GetPayment need an id):
# grpcio's empty reading of a flag-2 message is refused there by the service's own validation.
EMPTY_IS_INVALID = {"catalog", "inventory", "payments"}


def upstream_reason(cluster: str, what: str) -> str | None:
    """Why the implementation's gRPC library cannot refuse this malformation, or None."""
    service, lang = cluster.rsplit("-", 1)
    if (lang, what) == ("python", "compressed flag 2") and service in EMPTY_IS_INVALID:
        return None
    return UPSTREAM.get((lang, what))


def _direct_cases() -> list[Any]:
    cases = []
    for cluster in DIRECT:
        for what in FRAMING:
            reason = upstream_reason(cluster, what)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(cluster, what, marks=marks, id=f"{cluster}-{what}"))
    return cases


@pytest.fixture(scope="module")
def direct_replies(reliability_stack: Stack) -> dict[tuple[str, str], Reply | str]:
    """Every malformation sent to every running implementation's own port at once
    (a hang costs DIRECT_BOUND_SECONDS once, not once per case); each service then
    answers a normal call (checked per case)."""
    context = tls(reliability_stack.certs, OPERATOR)
    running = {impl.cluster: impl for impl in reliability_stack.running_impls()}

    def send(case: tuple[str, str]) -> Reply | str:
        cluster, what = case
        impl = running[cluster]
        address = f"127.0.0.1:{reliability_stack.topology.port_of(impl)}"
        path, body = DIRECT_RPCS[impl.service]
        try:
            return call(address, path, malformed(body)[what], tls=context, timeout=DIRECT_BOUND_SECONDS)
        except TimeoutError as err:
            return f"no answer: {err}"

    cases = [(cluster, what) for cluster in DIRECT if cluster in running for what in FRAMING]
    with ThreadPoolExecutor(max_workers=len(cases) or 1) as pool:
        return dict(zip(cases, pool.map(send, cases), strict=True))


@pytest.mark.parametrize(("cluster", "what"), _direct_cases())
def test_bad_framing_sent_directly_to_an_implementation_ends_fast_with_an_error(
    reliability_stack: Stack, direct_replies: dict[tuple[str, str], Reply | str], cluster: str, what: str
) -> None:
    if (cluster, what) not in direct_replies:
        pytest.skip(f"{cluster} is not running")
    reply = direct_replies[(cluster, what)]
    impl = next(i for i in reliability_stack.running_impls() if i.cluster == cluster)
    address = f"127.0.0.1:{reliability_stack.topology.port_of(impl)}"
    path, body = DIRECT_RPCS[impl.service]
    normal = call(address, path, grpc_frame(body), tls=tls(reliability_stack.certs, OPERATOR), timeout=15)
    assert normal.grpc_status in (0, 5), f"after {what}, a normal call to {cluster} got {normal}"
    assert isinstance(reply, Reply), f"{what} to {cluster}: {reply}"
    expected = {8} if "limit" in what else {3, 13}
    assert_refused(reply, f"{what} to {cluster}", DIRECT_BOUND_SECONDS, expected)


def test_direct_framing_outcomes_are_recorded(direct_replies: dict[tuple[str, str], Reply | str]) -> None:
    """The reliability table's row: what each implementation did with each malformation."""
    refused = sorted(
        f"{c}: {w}" for (c, w), r in direct_replies.items() if isinstance(r, Reply) and r.grpc_status in REFUSED
    )
    answered_ok = sorted(
        f"{c}: {w}" for (c, w), r in direct_replies.items() if isinstance(r, Reply) and r.grpc_status == 0
    )
    hung = sorted(f"{c}: {w}" for (c, w), r in direct_replies.items() if not isinstance(r, Reply))
    assert refused, direct_replies
    record(
        Outcome(
            "bad gRPC framing sent directly to each implementation (no Envoy)",
            f"{len(direct_replies)} calls: 4 kinds x {len({c for c, _ in direct_replies})} implementations",
            "INVALID_ARGUMENT / INTERNAL / RESOURCE_EXHAUSTED, except where the gRPC library cannot refuse "
            "(xfail, strict): there the edge's frame check and mutual TLS are the defence",
            f"{len(refused)} refused at once; OK for {', '.join(answered_ok) or 'none'}; "
            f"no answer within {DIRECT_BOUND_SECONDS:g} s for {', '.join(hung) or 'none'}",
        )
    )


@pytest.mark.parametrize("path", ["/v1/products/%FF%FE", "/v1/products/%E2%82", "/v1/products/%zz", "/v1/products/a%"])
def test_json_paths_with_bad_percent_encoding_are_400(reliability_stack: Stack, path: str) -> None:
    verify = ssl.create_default_context(cafile=str(reliability_stack.certs.ca))
    response = httpx.get(f"https://{reliability_stack.public_addr}{path}", timeout=15, verify=verify)
    assert response.status_code == 400, (response.status_code, response.text)
    assert "percent-encoding" in response.text
    good = httpx.get(f"https://{reliability_stack.public_addr}/v1/products/caf%C3%A9", timeout=15, verify=verify)
    assert good.status_code == 404, (good.status_code, good.text)  # UTF-8 escapes pass, and the catalog answers
    if path == "/v1/products/a%":
        record(
            Outcome(
                "JSON paths with bad percent-encoding",
                "%FF%FE, %E2%82 (not UTF-8), %zz, a trailing %",
                "HTTP 400 with a message",
                "was HTTP 500 (the catalog got a string that is not UTF-8); a UTF-8 escape still reaches the catalog",
            )
        )
