"""Envoy's head sampling takes the share stack.toml asks for, not every request.

stack.toml's sampling_ratio becomes the public and internal listeners'
random_sampling, which Envoy's runtime key `tracing.random_sampling`
(an integer per cent) overrides. The session stack samples everything,
so each test sets the key on Envoy's admin layer for its calls, reads
Envoy's own count of the requests it sampled at random, and puts the key back.

A configuration that looked right once traced every request whatever the
ratio (`use_request_id_for_trace_sampling: false`, docs/observability.md,
"Overhead"); these tests fail on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from e2e.support import CALL_TIMEOUT, Shop
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shopstack.stack import Stack

SAMPLED = "http.public.tracing.random_sampling"
CALLS = 300


def sampled_at_random(stack: Stack) -> int:
    """Envoy's count of the public listener's requests traced by random sampling."""
    return stack.envoy_stats(SAMPLED)[SAMPLED]


@pytest.fixture
def sampling(stack: Stack) -> Iterator[Callable[[float], None]]:
    def set_ratio(ratio: float) -> None:
        stack.set_runtime(tracing__random_sampling=round(ratio * 100))

    try:
        yield set_ratio
    finally:
        # An empty value takes the key off the admin layer: the configured ratio again.
        stack.set_runtime(tracing__random_sampling="")


def read_products(shop: Shop, calls: int) -> None:
    for _ in range(calls):
        shop.catalog.GetProduct(catalog_pb.GetProductRequest(product_id="sku-aeropress"), timeout=CALL_TIMEOUT)


@pytest.mark.parametrize(
    ("ratio", "low", "high"),
    [
        # Bounds at about five standard deviations of a binomial(CALLS, ratio).
        (0.0, 0, 0),
        (0.1, 30 - 26, 30 + 26),
        (0.5, 150 - 44, 150 + 44),
    ],
)
def test_envoy_samples_the_share_of_requests_it_is_given(
    stack: Stack, telemetry_shop: Shop, sampling: Callable[[float], None], ratio: float, low: int, high: int
) -> None:
    sampling(ratio)
    before = sampled_at_random(stack)
    read_products(telemetry_shop, CALLS)
    taken = sampled_at_random(stack) - before
    assert low <= taken <= high, f"Envoy sampled {taken} of {CALLS} requests at random_sampling {ratio:.0%}"
