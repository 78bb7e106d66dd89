"""Fixtures for the contract suites: which addresses to test, and a channel to each.

A suite module names its service (`SERVICE = "catalog"`) and asks for the
`target` fixture. Every test of the module then runs once per target:

- "direct": the implementation's own address (stack.addr(service));
- "envoy": Envoy's internal listener (stack.internal_addr), which serves every
  RPC, internal ones included;
- or, when `--target HOST:PORT` is given, only that address ("target") and no
  stack starts;
- or, when `--edge FILE` is given, only the internal listener of that Envoy
  ("envoy"), for a shop running elsewhere (containers).

Inventory may run several implementations at once (stack.routing["inventory"]
has one key per language). inventory_targets() yields one direct target per
running implementation and, when more than one runs, the same implementation
again through Envoy, pinned with the `x-shop-impl` header. A Target carries
the metadata to send on every call; the `channel` fixture adds it (and a
default deadline, so no call can hang) through an interceptor.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import running_edge, session_routing
from shopstack import channels, envoy, pki, topology
from shopstack.edge import Edge
from shopstack.stack import Stack

# Every call without its own timeout gets this one: generous for a 2-core
# machine running the whole stack, and still a bound, so nothing hangs.
DEFAULT_TIMEOUT_SECONDS = 15.0
# A client may send up to this much: the contract tests send oversized
# messages on purpose, and the server is the one that must refuse them.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
IMPL_HEADER = envoy.IMPL_HEADER


@dataclass(frozen=True)
class Target:
    """One address to run a suite against, and the metadata to send to it."""

    address: str
    label: str
    metadata: tuple[tuple[str, str], ...] = ()
    # True when the calls go through Envoy (retries, route timeouts apply).
    via_envoy: bool = False
    # True when the address is one implementation's own (no proxy in between).
    direct: bool = True


def _planned(service: str, routing: dict[str, dict[str, int]]) -> list[tuple[str, str | None, bool]]:
    """(label, lang, via_envoy) for every target of a service under routing."""
    if service != "inventory":
        return [("direct", None, False), ("envoy", None, True)]
    langs = sorted(routing.get("inventory", {}))
    plans: list[tuple[str, str | None, bool]] = []
    if len(langs) == 1:
        return [("direct", langs[0], False), ("envoy", None, True)]
    for lang in langs:
        plans.append((f"direct-{lang}", lang, False))
    for lang in langs:
        plans.append((f"envoy-{lang}", lang, True))
    return plans


def _target(stack: Stack, service: str, label: str, lang: str | None, via_envoy: bool) -> Target:
    if not via_envoy:
        return Target(address=stack.addr(service, lang), label=label)
    metadata = ((IMPL_HEADER, lang),) if lang else ()
    return Target(address=stack.internal_addr, label=label, metadata=metadata, via_envoy=True, direct=False)


def inventory_targets(stack: Stack) -> Iterator[Target]:
    """One direct target per running inventory implementation, plus Envoy.

    With one implementation: Envoy's internal listener as it is. With several:
    each implementation again through Envoy, pinned with x-shop-impl.
    """
    for label, lang, via_envoy in _planned("inventory", stack.routing):
        yield _target(stack, "inventory", label, lang, via_envoy)


def service_targets(stack: Stack, service: str) -> Iterator[Target]:
    if service == "inventory":
        yield from inventory_targets(stack)
        return
    for label, lang, via_envoy in _planned(service, stack.routing):
        yield _target(stack, service, label, lang, via_envoy)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "disruptive: makes a service answer UNAVAILABLE on purpose (tok_unavailable); "
        "runs after every other contract test, so that a proxy which takes that for a "
        "sick host and ejects it cannot fail unrelated tests",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    calm = [item for item in items if item.get_closest_marker("disruptive") is None]
    disruptive = [item for item in items if item.get_closest_marker("disruptive") is not None]
    items[:] = calm + disruptive


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    service = getattr(metafunc.module, "SERVICE", None)
    if service is None:
        raise pytest.UsageError(f"{metafunc.module.__name__} uses `target` but sets no SERVICE")
    if metafunc.config.getoption("--target"):
        labels = ["target"]
    elif metafunc.config.getoption("--edge"):
        labels = ["envoy"]
    else:
        # The labels are known before the session stack starts, the
        # addresses only after: both come from the one session routing.
        routing = session_routing()
        labels = [label for label, _, _ in _planned(service, routing)]
    metafunc.parametrize("target", labels, indirect=True, scope="module", ids=labels)


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Target:
    label: str = request.param
    address = request.config.getoption("--target")
    if address:
        return Target(address=address, label=label, direct=True)
    edge = running_edge(request.config)
    if edge is not None:
        return Target(address=edge.internal_addr, label=label, via_envoy=True, direct=False)
    service = request.module.SERVICE
    stack: Stack = request.getfixturevalue("stack")
    by_label = {t.label: t for t in service_targets(stack, service)}
    if label not in by_label:
        pytest.fail(f"{service}: no target {label!r} in this stack (has {sorted(by_label)})")
    return by_label[label]


@pytest.fixture(scope="module")
def full_stack(request: pytest.FixtureRequest) -> Stack | Edge | None:
    """The started stack, the --edge shop, or None under --target (tests needing it skip)."""
    if request.config.getoption("--target"):
        return None
    edge = running_edge(request.config)
    if edge is not None:
        return edge
    return request.getfixturevalue("stack")


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _TargetInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the target's metadata and a default deadline to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ()) + list(self._metadata)
        timeout = DEFAULT_TIMEOUT_SECONDS if details.timeout is None else details.timeout
        return _Details(
            details.method,
            timeout,
            metadata or None,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


@pytest.fixture(scope="module")
def channel(request: pytest.FixtureRequest, target: Target) -> Iterator[grpc.Channel]:
    """A channel to the target, sending its metadata and a default deadline on every call.

    Against the session stack it is mutual TLS with the operator's
    certificate (every service and the internal listener require one);
    under --target it is plaintext unless --certs names a certificates
    directory (`make certs` writes .run/certs).
    """
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    certs_dir = request.config.getoption("--certs")
    if request.config.getoption("--target"):
        if certs_dir:
            certs = pki.Certs(Path(certs_dir), topology.load().security.trust_domain)
            raw = channels.channel(certs, target.address, options=options)
        else:
            raw = grpc.insecure_channel(target.address, options=options)
    else:
        stack: Stack = request.getfixturevalue("stack")
        raw = stack.channel(target.address, options=options)
    try:
        grpc.channel_ready_future(raw).result(timeout=DEFAULT_TIMEOUT_SECONDS)
    except grpc.FutureTimeoutError:
        raw.close()
        pytest.fail(f"{target.label}: nothing answers at {target.address}")
    yield grpc.intercept_channel(raw, _TargetInterceptor(target.metadata))
    raw.close()
