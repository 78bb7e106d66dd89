"""Swap or canary a service's implementation on a running stack, live.

Both work by rewriting Envoy's watched dynamic files (cds.yaml, rds_*.yaml)
and supervisord's program list; Envoy is never restarted:

swap(stack, "inventory", "go")
  1. start inventory-go (supervisord) and wait until it is SERVING;
  2. add its cluster and wait until Envoy's health checks pass;
  3. route every inventory RPC to it (an RDS update: calls already in flight
     finish on the old implementation, new calls go to the new one);
  4. wait until the old cluster has no active requests, then remove it and
     stop the old process with SIGTERM, so it drains what is left.

canary(stack, "inventory", "go", 10)
  starts inventory-go as above and splits new calls 90/10 by weight; the
  `x-shop-impl: go` header pins one call to one implementation. A later swap
  makes one implementation the only one.

Every implementation of a service opens the same database file with the same
schema (data/inventory_schema.sql), so stock carries over without migration.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from shopstack import envoy
from shopstack.stack import Stack, StackError
from shopstack.topology import Implementation


def _apply(stack: Stack, routing: dict[str, dict[str, int]]) -> None:
    """Write Envoy's dynamic files and supervisord's programs for this routing."""
    stack.routing = routing
    envoy.render(
        stack.topology,
        stack.envoy_dir,
        stack.envoy_mode(),
        routing,
        bootstrap_too=False,
    )
    stack.conf.write_text(stack.supervisord_conf())
    stack.save_state()
    stack.ctl("reread", check=False)
    stack.ctl("update")


def _wait(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def _start(
    stack: Stack,
    impl: Implementation,
    routing: dict[str, dict[str, int]],
    timeout: float,
) -> None:
    """Run impl beside the current implementation, with no traffic yet."""
    warming = {**routing, impl.service: {**routing[impl.service], impl.lang: 0}}
    _apply(stack, warming)
    try:
        _wait(
            lambda: stack.service_health(impl, timeout=1.0) == "SERVING",
            f"{impl.cluster} to be SERVING",
            timeout,
        )
    except StackError as err:
        raise StackError(f"{err}\n{stack.tail(impl.cluster, 20)}") from err
    _wait(
        lambda: stack.envoy_clusters().get(impl.cluster) == "HEALTHY",
        f"Envoy to see {impl.cluster} healthy",
        timeout,
    )


def _active_requests(stack: Stack, cluster: str) -> int:
    return stack.envoy_stats(f"cluster.{cluster}.upstream_rq_active").get(f"cluster.{cluster}.upstream_rq_active", 0)


def canary(stack: Stack, service: str, lang: str, weight: int, timeout: float = 60.0) -> None:
    """Send `weight` percent of new calls to `lang`, the rest to the current implementation."""
    if not 0 <= weight <= 100:
        raise StackError(f"WEIGHT must be between 0 and 100, got {weight}")
    impl = stack.topology.impl_of(service, lang)
    current = dict(stack.routing[service])
    if lang not in current:
        _start(stack, impl, stack.routing, timeout)
    others = [other for other in current if other != lang]
    if not others:
        raise StackError(f"{lang} is the only {service} implementation running; nothing to split with")
    # The rest of the traffic stays with the implementation(s) already serving.
    base = max(others, key=lambda other: current[other])
    weights = {other: 0 for other in others}
    weights[base] = 100 - weight
    weights[lang] = weight
    _apply(stack, {**stack.routing, service: weights})


def swap(
    stack: Stack,
    service: str,
    lang: str,
    timeout: float = 60.0,
    drain_timeout: float = 15.0,
) -> None:
    """Make `lang` the only implementation of `service`, without failing a call."""
    impl = stack.topology.impl_of(service, lang)
    current = dict(stack.routing[service])
    if list(current) == [lang]:
        return
    if lang not in current:
        _start(stack, impl, stack.routing, timeout)
    # Every new call goes to the new implementation; the old ones stay in CDS
    # (weight 0) until their in-flight calls are done.
    _apply(stack, {**stack.routing, service: {**{old: 0 for old in current}, lang: 100}})
    for old in current:
        if old == lang:
            continue
        cluster = stack.topology.impl_of(service, old).cluster
        # Long-lived streams may outlast the wait: SIGTERM below gives them
        # the service's own grace period.
        with contextlib.suppress(StackError):
            _wait(lambda c=cluster: _active_requests(stack, c) == 0, f"{cluster} to finish its calls", drain_timeout)
    # Drop the old clusters and stop their processes (SIGTERM: they drain).
    _apply(stack, {**stack.routing, service: {lang: 100}})


def set_weights(stack: Stack, service: str, weights: dict[str, int]) -> None:
    """Route a service's calls by these weights among implementations that already run."""
    unknown = [lang for lang in weights if lang not in stack.routing[service]]
    if unknown:
        raise StackError(f"{service}: {unknown} not running; start it with a canary or a swap first")
    _apply(stack, {**stack.routing, service: dict(weights)})
