"""Run ghz once and read its JSON report; a failed request fails the run.

ghz is pinned in tools/go.mod and built into .tmp/bin by `make bench`. Every call goes through the descriptor set (--protoset), so
ghz needs no reflection and measures only the RPC itself.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError

# The percentiles ghz reports that the report shows.
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Load:
    """How hard to push: closed loop (rps=0) or open loop at rps requests/s."""

    concurrency: int
    connections: int
    seconds: float
    rps: int = 0


@dataclass(frozen=True)
class Tls:
    """How ghz connects: TLS trusting ca, with a client certificate when cert is set."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def args(self) -> list[str]:
        args = ["--cacert", str(self.ca)]
        if self.cert is not None and self.key is not None:
            args += ["--cert", str(self.cert), "--key", str(self.key)]
        return args


@dataclass(frozen=True)
class Call:
    """One RPC against one address: what ghz needs to make it."""

    method: str  # package.Service.Method
    address: str
    data: str  # JSON; may use ghz templates such as {{newUUID}}
    metadata: dict[str, str] = field(default_factory=dict)
    tls: Tls | None = None  # None: plaintext (only the TLS cost scenario's twins)
    protoset: Path | None = None  # None: the shop's descriptor set


@dataclass(frozen=True)
class Result:
    """What one ghz run measured (latencies in milliseconds)."""

    count: int
    seconds: float
    rps: float
    latency_ms: dict[int, float]

    def to_json(self) -> dict[str, object]:
        return {
            "count": self.count,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "latency_ms": {f"p{p}": round(v, 3) for p, v in self.latency_ms.items()},
        }


class Ghz:
    """The pinned ghz binary and the descriptor set it reads the API from."""

    def __init__(self, binary: Path, protoset: Path) -> None:
        if not binary.is_file():
            raise BenchError(f"ghz is not built at {binary}; run `make bench`, which builds it")
        if not protoset.is_file():
            raise BenchError(f"the descriptor set {protoset} is missing; run `make build`")
        self.binary = binary
        self.protoset = protoset

    def version(self) -> str:
        """The ghz module version compiled into the binary (ghz --version says "dev" when built with go install)."""
        out = subprocess.run(["go", "version", "-m", str(self.binary)], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "mod" and parts[1] == "github.com/bojand/ghz":
                return parts[2]
        return "unknown"

    def run(self, call: Call, load: Load, *, what: str) -> Result:
        """Run ghz for load.seconds and return its figures; raise BenchError on any failed request."""
        args = [
            str(self.binary),
            *(call.tls.args() if call.tls else ["--insecure"]),
            "--protoset",
            str(call.protoset or self.protoset),
            "--call",
            call.method,
            "--data",
            call.data,
            "--concurrency",
            str(load.concurrency),
            "--connections",
            str(load.connections),
            "--duration",
            f"{load.seconds:g}s",
            # A call still running at the end of the duration is waited for,
            # not cancelled and counted as an error.
            "--duration-stop",
            "wait",
            "--timeout",
            "20s",
            "--format",
            "json",
        ]
        if load.rps:
            args += ["--rps", str(load.rps)]
        if call.metadata:
            args += ["--metadata", json.dumps(call.metadata)]
        args.append(call.address)
        proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=load.seconds + 120)
        if proc.returncode != 0 and "panic: send on closed channel" in proc.stderr:
            # A race in ghz's worker ticker as a run ends (seen under heavy
            # machine load): its figures are lost, not wrong; run it again once.
            proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=load.seconds + 120)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise BenchError(
                f"{what}: ghz exited {proc.returncode} without a JSON report:\n{proc.stderr.strip()}\n{proc.stdout[:2000]}"
            ) from None
        return parse(report, what=what)


def parse(report: dict, *, what: str) -> Result:
    """Read a ghz JSON report; any error or non-OK status is a BenchError."""
    statuses = report.get("statusCodeDistribution") or {}
    errors = report.get("errorDistribution") or {}
    bad = {code: n for code, n in statuses.items() if code != "OK"}
    if bad or errors:
        raise BenchError(f"{what}: requests failed: statuses {bad or statuses}, errors {errors}")
    count = int(report.get("count", 0))
    if count == 0 or statuses.get("OK", 0) != count:
        raise BenchError(f"{what}: ghz made {count} calls, {statuses.get('OK', 0)} OK: {statuses}")
    distribution = {int(d["percentage"]): float(d["latency"]) / 1e6 for d in report.get("latencyDistribution") or []}
    missing = [p for p in PERCENTILES if p not in distribution]
    if missing:
        raise BenchError(f"{what}: ghz reported no p{missing} latency")
    seconds = float(report["total"]) / 1e9
    return Result(
        count=count,
        seconds=seconds,
        rps=float(report["rps"]),
        latency_ms={p: distribution[p] for p in PERCENTILES},
    )
