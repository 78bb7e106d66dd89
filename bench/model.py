"""The bench's data types: the plan of a run, what a row measures, and the
rows themselves. run.py fills them and report.py renders them; neither imports
the other."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    """How long and how often: the only difference between quick and full."""

    name: str
    rounds: int
    warmup_seconds: float
    unary_seconds: float
    hop_seconds: float
    stream_seconds: float
    e2e_seconds: float
    # Closed loop: ghz workers and the HTTP/2 connections they share.
    concurrency: int = 8
    connections: int = 2
    # Open loop: requests/s, with enough workers that the rate never waits on a slow reply.
    hop_rps: int = 200
    hop_concurrency: int = 32
    watchers: int = 4
    # PlaceOrder's concurrent clients: each a point of its scaling curve.
    e2e_clients: tuple[int, ...] = (1, 16)
    # WatchStock's fan-out curve: watchers of one SKU per point, direct to each implementation.
    fanout_watchers: tuple[int, ...] = ()
    # How long every process's CPU is sampled with no load, before the first round.
    idle_seconds: float = 1.0


QUICK = Plan("quick", rounds=1, warmup_seconds=0.3, unary_seconds=1, hop_seconds=0.5, stream_seconds=1, e2e_seconds=2)
FULL = Plan(
    "full",
    rounds=3,
    warmup_seconds=2,
    unary_seconds=5,
    hop_seconds=4,
    stream_seconds=3,
    e2e_seconds=8,
    e2e_clients=(1, 4, 16, 64),
    fanout_watchers=(1, 100, 1000),
    idle_seconds=5.0,
)


@dataclass(frozen=True)
class Target:
    """A cheap read of one implementation."""

    service: str
    lang: str
    rpc: str
    method: str  # for ghz: package.Service.Method
    data: str
    internal: bool  # only Envoy's internal listener serves it

    @property
    def label(self) -> str:
        return f"{self.service} {self.rpc} ({self.lang})"

    @property
    def is_floor(self) -> bool:
        return self.service == FLOOR


# The service name of the floor targets: bare servers (bench/floors.py), not the shop's.
FLOOR = "floor"


@dataclass
class Row:
    """One measured row: the runs of every round, and how they summarise."""

    scenario: str
    target: str
    path: str  # "direct" or "envoy public" / "envoy internal"
    runs: list[dict[str, object]] = field(default_factory=list)
    note: str = ""
    program: str = ""  # the process serving it, e.g. "catalog-go" (a supervisord program) or "floor-go"
    lang: str = ""  # the language of that process: its floor is the same language's bare server
    proxy: str = ""  # the Envoy in the path ("envoy", the stack's, or "envoy-bare", the bare hop); "" direct

    def median(self, key: str) -> float:
        values = [_dig(run, key) for run in self.runs]
        return statistics.median(values)

    def spread(self, key: str) -> tuple[float, float]:
        values = [_dig(run, key) for run in self.runs]
        return min(values), max(values)

    def to_json(self) -> dict[str, object]:
        return {
            "program": self.program,
            "lang": self.lang,
            "proxy": self.proxy,
            "scenario": self.scenario,
            "target": self.target,
            "path": self.path,
            "note": self.note,
            "runs": self.runs,
        }


def _dig(run: dict[str, object], key: str) -> float:
    value: object = run
    for part in key.split("."):
        assert isinstance(value, dict), key
        value = value[part]
    assert isinstance(value, (int, float)), key
    return float(value)


@dataclass(frozen=True)
class Knobs:
    """What an experiment changes in the bench's private stack (nothing by default)."""

    log_level: str = "info"
    envoy_concurrency: int | None = None
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # As `make up` runs (Zipkin and Prometheus up, every span exported at the
    # default sampling ratio, /metrics served), or with telemetry off: Envoy
    # without its tracer, services sampling nothing, exporting nothing and
    # serving no /metrics (their in-process counters still count).
    telemetry: bool = True
    # Extra flags for every Node program, before its script (e.g. `make
    # profile`'s --cpu-prof, which NODE_OPTIONS does not accept).
    node_flags: str = ""
