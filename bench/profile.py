"""`make profile SERVICE=... SCENARIO=...`: where one service's CPU goes under one bench scenario.

The bench's private stack starts as `make bench` starts it, one round of the
scenario runs (the full plan's durations, warm-up included) against the
service, and the service's profiler records meanwhile:

- Python: py-spy (pinned in requirements-dev.txt) attaches to the process and
  samples it for the scenario's run, then writes an SVG flame graph;
- Go: the service writes a pprof CPU profile of its whole run
  (SHOP_CPU_PROFILE, off by default, go_service/internal/server/profile.go);
  `go tool pprof -top` summarises it, `go tool pprof -http=127.0.0.1:0 FILE`
  draws its flame graph;
- Node: the service runs with `node --cpu-prof` and writes a .cpuprofile when
  it stops (open it in Chrome's DevTools, Performance tab, or speedscope);
  the heaviest functions by self time are printed.

The Go and Node profiles span the process's whole life, start-up and seeding
included (a small share next to the scenario's seconds of load).

    python -m bench.profile SERVICE SCENARIO        # record
    python3 -m bench.profile --check SERVICE SCENARIO  # only check the arguments (standard library only)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from shopstack.topology import ROOT, Implementation, Topology, load

from bench.model import Knobs

# Which programs each scenario sends load to (bench/run.py). unary and hop
# read catalog (Go), every inventory implementation and payments; stream
# watches and writes every inventory implementation; e2e runs the saga, whose
# calls Envoy routes to the default implementation of each service.
SCENARIOS = ("unary", "hop", "stream", "e2e")
RESULTS = ROOT / "results"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
TOP = 25


class UsageError(ValueError):
    """SERVICE or SCENARIO is wrong; the message says what would be right."""


def loaded(topology: Topology, scenario: str) -> list[str]:
    """The programs (clusters) the scenario puts load on."""
    if scenario in ("unary", "hop"):
        return [
            "catalog-go",
            *[i.cluster for i in topology.services["inventory"].implementations.values()],
            "payments-python",
        ]
    if scenario == "stream":
        return [i.cluster for i in topology.services["inventory"].implementations.values()]
    return [topology.impl_of(name).cluster for name in ("orders", "catalog", "inventory", "payments")]


def resolve(topology: Topology, service: str, scenario: str) -> Implementation:
    """The implementation SERVICE names (a program like inventory-go, or a service with one), checked against SCENARIO."""
    programs = {i.cluster: i for s in topology.services.values() for i in s.implementations.values()}
    example = "make profile SERVICE=inventory-node SCENARIO=unary"
    if not service:
        raise UsageError(f"SERVICE is missing; it is one of {', '.join(sorted(programs))} (e.g. {example})")
    if not scenario:
        raise UsageError(f"SCENARIO is missing; it is one of {', '.join(SCENARIOS)} (e.g. {example})")
    if scenario not in SCENARIOS:
        raise UsageError(f"there is no scenario {scenario!r}; SCENARIO is one of {', '.join(SCENARIOS)}")
    if service in programs:
        impl = programs[service]
    elif service in topology.services:
        impls = list(topology.services[service].implementations.values())
        if len(impls) > 1:
            raise UsageError(
                f"{service} has {len(impls)} implementations; name one: {', '.join(i.cluster for i in impls)}"
            )
        impl = impls[0]
    else:
        raise UsageError(f"there is no service or program {service!r}; SERVICE is one of {', '.join(sorted(programs))}")
    busy = loaded(topology, scenario)
    if impl.cluster not in busy:
        raise UsageError(
            f"the {scenario} scenario sends no load to {impl.cluster}; it loads {', '.join(busy)}. "
            f"Scenarios that load {impl.cluster}: "
            + (", ".join(s for s in SCENARIOS if impl.cluster in loaded(topology, s)) or "none")
        )
    return impl


# -- recording ----------------------------------------------------------------


def profile_knobs(impl: Implementation, out: Path) -> Knobs:
    """What makes the service profile itself (Go: a setting; Node: flags, which
    NODE_OPTIONS does not accept); py-spy attaches to a Python one instead."""
    if impl.lang == "go":
        return Knobs(service_env={impl.service: {"SHOP_CPU_PROFILE": str(out / f"{impl.cluster}.pprof")}})
    if impl.lang == "node":
        return Knobs(node_flags=f"--cpu-prof --cpu-prof-dir={out} --cpu-prof-name={impl.cluster}.cpuprofile")
    return Knobs()


def node_top(path: Path, top: int = TOP) -> list[str]:
    """The functions with the most self time in a V8 .cpuprofile."""
    prof = json.loads(path.read_text())
    by_id = {node["id"]: node for node in prof["nodes"]}
    deltas = prof.get("timeDeltas") or []
    self_us: Counter[str] = Counter()
    for sample, delta in zip(prof.get("samples") or [], deltas[1:] + deltas[-1:], strict=True):
        frame = by_id[sample]["callFrame"]
        url = frame.get("url", "").replace(f"file://{ROOT}/", "")
        name = f"{frame.get('functionName') or '(anonymous)'} {url}:{frame.get('lineNumber', -1) + 1}"
        self_us[name] += delta
    # The share of the time the process was busy: waiting for work is not a cost.
    busy = {name: us for name, us in self_us.items() if not name.startswith("(idle)")}
    total = sum(busy.values()) or 1
    ranked = sorted(busy.items(), key=lambda item: -item[1])[:top]
    return [f"{us / total * 100:5.1f}%  {us / 1000:9.1f} ms  {name}" for name, us in ranked]


def go_top(binary: Path, path: Path, top: int = TOP) -> list[str]:
    proc = subprocess.run(
        ["go", "tool", "pprof", "-top", f"-nodecount={top}", str(binary), str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT / "go_service",
    )
    return (proc.stdout or proc.stderr).strip().splitlines()


def record(impl: Implementation, scenario: str) -> Path:
    """Run the scenario once with the service profiled; returns the directory of the results."""
    # The bench and gRPC only now: the argument check above runs on the machine's python3.
    from bench import run
    from bench.model import FULL, Plan

    out = RESULTS / f"profile-{dt.datetime.now():%Y%m%d-%H%M%S}-{impl.cluster}-{scenario}"
    out.mkdir(parents=True)
    plan = Plan(**{**FULL.__dict__, "rounds": 1})
    stack, skipped = run.start_stack(profile_knobs(impl, out))
    try:
        if impl.service == "inventory" and impl.lang in skipped:
            raise run.BenchError(f"{impl.cluster} cannot run: {skipped[impl.lang]}")
        skus = [p["id"] for p in json.loads((ROOT / "data" / "products.json").read_text())["products"]]
        payment_id = run.seed(stack, skus[0])
        langs = sorted(stack.routing["inventory"], key=run.INVENTORY_LANGS.index)
        ghz = run.Ghz(run.GHZ, run.DESCRIPTOR_SET)
        bench = run.Bench(plan, stack, ghz, payment_id, langs, skus)
        # Only the calls that reach the profiled service.
        if scenario in ("unary", "hop"):
            bench.targets = [t for t in bench.targets if (t.service, t.lang) == (impl.service, impl.lang)]
        elif scenario == "stream":
            bench.langs = [impl.lang]
        pid = stack.pid_of(impl.cluster)
        if pid is None:
            raise run.BenchError(f"{impl.cluster} is not running")
        spy = None
        if impl.lang == "python":
            spy = subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--format",
                    "flamegraph",
                    "--output",
                    str(out / f"{impl.cluster}.svg"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        print(f"profile: {impl.cluster} (pid {pid}) under the {scenario} scenario, one round")
        started = time.monotonic()
        try:
            run.SCENARIOS[scenario](bench, 0)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                output, _ = spy.communicate(timeout=120)
                if spy.returncode != 0:
                    print(output.decode(errors="replace"), file=sys.stderr)
        print(f"profile: the scenario took {time.monotonic() - started:.0f}s")
        bench.twins.stop()
    finally:
        # Go and Node write their profiles as they stop.
        stack.down()
    return out


def report(impl: Implementation, out: Path) -> int:
    """Say where the flame graph is, with the heaviest functions where they can be read here."""
    if impl.lang == "python":
        svg = out / f"{impl.cluster}.svg"
        if not svg.is_file():
            print(f"profile: py-spy wrote no flame graph in {out}", file=sys.stderr)
            return 1
        print(f"profile: flame graph (py-spy, SVG; open it in a browser): {svg.relative_to(ROOT)}")
        return 0
    if impl.lang == "go":
        pprof = out / f"{impl.cluster}.pprof"
        if not pprof.is_file() or pprof.stat().st_size == 0:
            print(f"profile: {impl.cluster} wrote no CPU profile at {pprof}; see its log", file=sys.stderr)
            return 1
        binary = Path(impl.command[0].format(root=ROOT))
        lines = go_top(binary, pprof)
        (out / "top.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        print(f"profile: CPU profile (pprof): {pprof.relative_to(ROOT)}")
        print(f"profile: flame graph: go tool pprof -http=127.0.0.1:0 {binary} {pprof} (View > Flame Graph)")
        return 0
    found = sorted(out.glob("*.cpuprofile"))
    if not found:
        print(f"profile: node wrote no .cpuprofile in {out}; see {impl.cluster}'s log", file=sys.stderr)
        return 1
    lines = node_top(found[-1])
    (out / "top.txt").write_text("\n".join(lines) + "\n")
    print("self time (share of busy time)  function")
    print("\n".join(lines))
    print(
        f"profile: CPU profile (V8): {found[-1].relative_to(ROOT)}; its flame chart: Chrome DevTools > "
        "Performance > Load profile, or speedscope"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the arguments")
    parser.add_argument(
        "service", help="a program (catalog-go, inventory-node, ...) or a service with one implementation"
    )
    parser.add_argument("scenario", help=f"one of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    try:
        impl = resolve(load(), args.service.strip(), args.scenario.strip())
    except UsageError as err:
        print(f"make profile: {err}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    if impl.lang == "python" and not PY_SPY.is_file():
        print(f"make profile: py-spy is not installed at {PY_SPY}; `make profile` installs it", file=sys.stderr)
        return 2
    from bench.errors import BenchError

    try:
        out = record(impl, args.scenario)
    except BenchError as err:
        print(f"profile: FAILED: {err}", file=sys.stderr)
        return 1
    return report(impl, out)


if __name__ == "__main__":
    sys.exit(main())
