"""Reading the session stack's Zipkin and Prometheus through their HTTP APIs.

Spans reach Zipkin in batches (every half second from each service, as soon
as Envoy flushes), and Prometheus scrapes the test stack every second, so
every read polls with a deadline (wait_for) instead of sleeping.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2e.support import wait_for
from shopstack.stack import Stack

# Envoy's spans carry its node's cluster as their service name.
ENVOY_SERVICE = "shop-edge"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


@dataclass(frozen=True)
class Span:
    """One Zipkin v2 span, with what the tests look at."""

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw["id"])

    @property
    def parent(self) -> str | None:
        return self.raw.get("parentId")

    @property
    def name(self) -> str:
        return str(self.raw.get("name", ""))

    @property
    def service(self) -> str:
        return str(self.raw.get("localEndpoint", {}).get("serviceName", ""))

    @property
    def kind(self) -> str:
        return str(self.raw.get("kind", ""))

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.raw.get("tags", {}))

    @property
    def start(self) -> int:
        return int(self.raw.get("timestamp", 0))

    def __str__(self) -> str:
        return f"{self.service}:{self.kind or 'LOCAL'}:{self.name} id={self.id} parent={self.parent} tags={self.tags}"


class Trace(list[Span]):
    def by_service(self, service: str) -> list[Span]:
        return [s for s in self if s.service == service]

    def named(self, name: str) -> list[Span]:
        return [s for s in self if s.name == name]

    def children(self, span: Span) -> list[Span]:
        return sorted((s for s in self if s.parent == span.id), key=lambda s: s.start)

    def describe(self) -> str:
        return "\n  ".join(str(s) for s in sorted(self, key=lambda s: s.start))


class Zipkin:
    def __init__(self, stack: Stack) -> None:
        self.url = stack.zipkin_url

    def trace(self, trace_id: str) -> Trace:
        """The spans Zipkin holds for trace_id now (empty while none arrived)."""
        try:
            spans = _get_json(f"{self.url}/api/v2/trace/{trace_id}")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return Trace()
            raise
        return Trace(Span(s) for s in spans)

    def wait_trace(self, trace_id: str, complete: Callable[[Trace], bool], what: str, timeout: float = 30.0) -> Trace:
        """Poll until the trace satisfies complete(); fail showing the spans seen."""
        seen: list[Trace] = [Trace()]

        def probe() -> Trace | None:
            seen[0] = self.trace(trace_id)
            return seen[0] if complete(seen[0]) else None

        try:
            return wait_for(what, probe, timeout=timeout, interval=0.3)
        except AssertionError as err:
            raise AssertionError(f"{err}\ntrace {trace_id} has:\n  {seen[0].describe()}") from None


class Prometheus:
    def __init__(self, stack: Stack) -> None:
        self.url = stack.prometheus_url

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        reply = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def value(self, promql: str) -> float | None:
        """The single value of a query that sums to one series, or None when it has none."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql} gave {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None
