"""What each part of the stack's Envoy configuration costs per request: `make bench-envoy`.

The bench's private stack starts as `make up` runs it (telemetry on), with
the bare hop beside it (bench/floors.py). Then, round after round, the
stack's Envoy is restarted on a variant of its generated envoy.yaml, one
part taken out at a time (an HTTP filter, the access log, tracing), and the
same read goes through each listener: catalog GetProduct on the public
listener (server TLS) and on the internal one (mutual TLS, the operator's
certificate, which the internal listener's RBAC allows every method), closed
loop as the unary scenario runs. One upstream for both listeners, a Go
service like the bare hop's: a proxy's CPU per request grows as its
upstream slows down (fewer requests share each wake-up), so a slower
upstream behind one listener would read as that listener's cost (or at a fixed rate with --rps; on this
shared machine, at 200 requests/s the per-wake-up costs dominate and the
figures scatter by 2x from run to run). Envoy's
CPU per request (net of what it spends with no load, sampled after each
restart), over the bare hop's on the same kind of listener, says what each
part costs; the variants are interleaved within each round so that the
machine's noise lands on all alike. The generated configuration itself is
never changed by this: only the bench's private copy.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml
from shopstack import pki
from shopstack.stack import ENVOY_PROGRAM, Stack
from shopstack.topology import DESCRIPTOR_SET, ROOT

from bench import cpu
from bench.errors import BenchError
from bench.floors import HEALTH_CHECK, Floors
from bench.ghz import Call, Ghz, Load, Tls
from bench.model import Knobs
from bench.run import GHZ, start_stack

Config = dict[str, Any]


def _hcms(config: Config) -> dict[str, Config]:
    """Each listener's http_connection_manager config, by listener name."""
    found = {}
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net_filter in chain["filters"]:
                if net_filter["name"] == "envoy.filters.network.http_connection_manager":
                    found[listener["name"]] = net_filter["typed_config"]
    return found


def _filter_label(http_filter: Config) -> str:
    name = http_filter["name"].removeprefix("envoy.filters.http.")
    typed = http_filter.get("typed_config", {})
    if name == "header_mutation":
        mutations = typed.get("mutations", {})
        return "header_mutation (trace id)" if "response_mutations" in mutations else "header_mutation (identity)"
    if name == "rbac":
        policies = typed.get("rules", {}).get("policies", {})
        return "rbac (bad path)" if "bad percent-encoding" in policies else "rbac (internal access)"
    if name == "fault":
        return "fault (every service)"
    return name


def variants(config: Config) -> list[tuple[str, Callable[[Config], None]]]:
    """(label, change) for each part that can be taken out: the config as generated first."""

    def drop_filter(label: str) -> Callable[[Config], None]:
        def change(cfg: Config) -> None:
            for hcm in _hcms(cfg).values():
                hcm["http_filters"] = [f for f in hcm["http_filters"] if _filter_label(f) != label]

        return change

    def drop_keys(*keys: str) -> Callable[[Config], None]:
        def change(cfg: Config) -> None:
            for hcm in _hcms(cfg).values():
                for key in keys:
                    hcm.pop(key, None)

        return change

    def router_only(cfg: Config) -> None:
        for hcm in _hcms(cfg).values():
            hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
            for key in ("access_log", "tracing", "request_id_extension"):
                hcm.pop(key, None)

    labels: list[str] = []
    for hcm in _hcms(config).values():
        for http_filter in hcm["http_filters"]:
            label = _filter_label(http_filter)
            if label not in labels and label != "router":
                labels.append(label)
    found: list[tuple[str, Callable[[Config], None]]] = [("as generated", lambda cfg: None)]
    found.append(("without the access log", drop_keys("access_log")))
    found.append(("without tracing", drop_keys("tracing", "request_id_extension")))
    found += [(f"without {label}", drop_filter(label)) for label in labels]
    found.append(("router only (every filter, the access log and tracing out)", router_only))

    def router_only_keeping(cfg: Config, *keys: str) -> None:
        """router_only, with these connection-manager keys kept as generated."""
        kept = {name: {k: hcm[k] for k in keys if k in hcm} for name, hcm in _hcms(cfg).items()}
        router_only(cfg)
        for name, hcm in _hcms(cfg).items():
            hcm.update(kept[name])

    def router_and_access_log(cfg: Config) -> None:
        # The measure of a proxy "with access logging on": the stack's
        # listeners, clusters and JSON access log, and no filter but the router.
        router_only_keeping(cfg, "access_log")

    found.append(("router and the access log only (every filter and tracing out)", router_and_access_log))

    def zipkin_batched(cfg: Config) -> None:
        # Tried: one batch a second instead of a request per 5 spans. It made
        # Envoy's CPU per request 4 to 8 times worse (docs/performance.md).
        for layer in cfg["layered_runtime"]["layers"]:
            if "static_layer" in layer:
                layer["static_layer"]["tracing.zipkin.min_flush_spans"] = 10000

    def lua_always(cfg: Config) -> None:
        for hcm in _hcms(cfg).values():
            for i, http_filter in enumerate(hcm["http_filters"]):
                wrapped = http_filter.get("typed_config", {}).get("extension_config")
                if wrapped is not None:
                    hcm["http_filters"][i] = wrapped

    def tracings(cfg: Config) -> list[Config]:
        return [hcm["tracing"] for hcm in _hcms(cfg).values() if "tracing" in hcm]

    def no_upstream_span(cfg: Config) -> None:
        for tracing in tracings(cfg):
            tracing["spawn_upstream_span"] = False

    def zipkin_proto(cfg: Config) -> None:
        for tracing in tracings(cfg):
            tracing["provider"]["typed_config"]["collector_endpoint_version"] = "HTTP_PROTO"

    def router_and_unsampled_tracer(cfg: Config) -> None:
        # The tracer alone on the router-only hop, nothing sampled: what
        # having it costs, apart from the filters around it and the spans.
        router_only_keeping(cfg, "tracing", "request_id_extension")
        for tracing in tracings(cfg):
            tracing["random_sampling"] = {"value": 0}

    found.append(("router only plus tracing, no request sampled", router_and_unsampled_tracer))
    found.append(("tracing without the router's upstream span (spawn_upstream_span false)", no_upstream_span))
    found.append(("Zipkin spans sent as protobuf (HTTP_PROTO), not JSON", zipkin_proto))
    found.append(("Zipkin spans in one batch a second (min_flush_spans 10000)", zipkin_batched))
    found.append(("the request-id Lua filter on every request (no matcher)", lua_always))
    return found


def restart_envoy(stack: Stack, config: Config, ghz: Ghz, calls: list[Call]) -> None:
    (stack.envoy_dir / "envoy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    stack.ctl("restart", ENVOY_PROGRAM)
    # Every cluster starts unhealthy until its first health check passes.
    deadline = time.monotonic() + 60
    for call in calls:
        while True:
            try:
                ghz.run(call, Load(1, 1, 0.3), what="Envoy ready")
                break
            except BenchError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"Envoy did not serve {call.method} within 60 s of its restart; see its log"
                    ) from None
                time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.envoy_filters", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rps", type=int, default=0, help="a fixed rate (open loop); 0, the default: closed loop")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="how long Envoy's idle CPU is sampled")
    parser.add_argument("--only", action="append", default=[], help="only the variants whose label contains this")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    ghz = Ghz(GHZ, DESCRIPTOR_SET)
    try:
        stack, _ = start_stack(Knobs())
    except BenchError as err:
        print(f"bench.envoy_filters: FAILED: {err}", file=sys.stderr)
        return 1
    floors = Floors(stack)
    try:
        skus = [p["id"] for p in json.loads((ROOT / "data" / "products.json").read_text())["products"]]
        floors.start()
        pair = stack.certs.pair(pki.OPERATOR)
        operator = Tls(stack.certs.ca, pair.cert, pair.key)
        public = Tls(stack.certs.ca)
        reads = {
            "public": Call(
                "shop.catalog.v1.CatalogService.GetProduct",
                stack.public_addr,
                json.dumps({"product_id": skus[1]}),
                tls=public,
            ),
            "internal": Call(
                "shop.catalog.v1.CatalogService.GetProduct",
                stack.internal_addr,
                json.dumps({"product_id": skus[1]}),
                tls=operator,
            ),
        }
        bare = {
            "public": Call(HEALTH_CHECK, floors.envoy_public, "{}", tls=public, protoset=floors.protoset),
            "internal": Call(HEALTH_CHECK, floors.envoy_internal, "{}", tls=operator, protoset=floors.protoset),
        }
        generated = yaml.safe_load((stack.envoy_dir / "envoy.yaml").read_text())
        chosen = [v for v in variants(generated) if not args.only or any(o in v[0] for o in args.only)]
        load = Load(32, 2, args.seconds, rps=args.rps) if args.rps else Load(8, 2, args.seconds)
        # {(variant, listener): [Envoy CPU µs per request, one per round]}
        figures: dict[tuple[str, str], list[float]] = {}

        def idle_rate(pids: dict[str, int], program: str) -> float:
            """Envoy's CPU seconds per second with no load (health checks, stats, span export, scrapes)."""
            before, start = cpu.sample(pids), time.monotonic()
            time.sleep(args.idle_seconds)
            return cpu.cpu_seconds(before, cpu.sample(pids))[program] / (time.monotonic() - start)

        def measure(label: str, listener: str, call: Call, pids: dict[str, int], program: str, idle: float) -> None:
            ghz.run(call, Load(8, 2, 1.0), what=f"{label}: warm-up")
            before, start = cpu.sample(pids), time.monotonic()
            result = ghz.run(call, load, what=f"{label} ({listener})")
            used = cpu.cpu_seconds(before, cpu.sample(pids))[program] - idle * (time.monotonic() - start)
            value = max(used, 0.0) / result.count * 1e6
            figures.setdefault((label, listener), []).append(value)
            print(
                f"  {label:62} {listener:8} {result.rps:7.0f} rps  Envoy {value:5.0f} µs/request "
                f"(idle {idle * 1000:.0f} ms/s)"
            )

        for round_no in range(args.rounds):
            print(f"round {round_no + 1} of {args.rounds}")
            bare_idle = idle_rate(floors.pids(), "envoy-bare")
            for listener, call in bare.items():
                measure(
                    "bare hop (router only, bench/floors.py)", listener, call, floors.pids(), "envoy-bare", bare_idle
                )
            for label, change in chosen:
                config = copy.deepcopy(generated)
                change(config)
                try:
                    restart_envoy(stack, config, ghz, list(reads.values()))
                except BenchError as err:
                    print(f"  {label}: skipped, Envoy did not serve with it: {err}")
                    continue
                pids = cpu.programs(stack)
                idle = idle_rate(pids, ENVOY_PROGRAM)
                for listener, call in reads.items():
                    try:
                        measure(label, listener, call, pids, ENVOY_PROGRAM, idle)
                    except BenchError as err:
                        print(f"  {label} ({listener}): failed: {err}")
        # Back to the generated configuration before the stack stops.
        restart_envoy(stack, generated, ghz, list(reads.values()))
    except BenchError as err:
        print(f"bench.envoy_filters: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        floors.stop()
        stack.down()

    bare_us = {
        listener: statistics.median(figures[("bare hop (router only, bench/floors.py)", listener)]) for listener in bare
    }
    generated_us = {listener: statistics.median(figures.get(("as generated", listener), [0.0])) for listener in reads}
    print()
    print(
        "| configuration | public: Envoy CPU µs/request | / bare hop | change | internal: Envoy CPU µs/request | / bare hop | change |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = list(dict.fromkeys(label for label, _ in figures))
    for label in labels:
        cells = []
        for listener in reads:
            values = figures.get((label, listener))
            if not values:
                cells.append("| | |")
                continue
            value = statistics.median(values)
            change = f"{value - generated_us[listener]:+.0f}" if generated_us[listener] and "bare" not in label else ""
            cells.append(f"{value:.0f} | {value / bare_us[listener]:.2f} | {change}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
