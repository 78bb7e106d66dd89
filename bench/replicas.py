"""Two replicas of the catalog behind Envoy against one: throughput and CPU.

`make bench-replicas` (docs/scaling.md has the figures). The bench's private
stack starts as `make up` runs it; a second catalog process starts beside the
first on its own port and its own copy of the database (the catalog is
read-only after seeding, which is what lets it run replicas), and Envoy's
catalog-go cluster is rewritten (cds.yaml, which Envoy watches) to hold one
endpoint or both. Rounds alternate one and two replicas, each a closed-loop
ghz run of GetProduct through Envoy's public listener, with the CPU each
process used meanwhile. Every call must succeed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import yaml
from shopstack import envoy
from shopstack.stack import Stack, free_port
from shopstack.topology import DESCRIPTOR_SET, ROOT

from bench import cpu
from bench.errors import BenchError
from bench.ghz import Call, Ghz, Load
from bench.run import GHZ, Knobs, start_stack

CLUSTER = "catalog-go"


def _endpoint(port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


def set_endpoints(stack: Stack, ports: list[int]) -> None:
    """Rewrite cds.yaml so catalog-go has exactly these endpoints, and wait until Envoy sees them healthy."""
    config = envoy.clusters(stack.topology, stack.routing, stack.envoy_mode())
    config = copy.deepcopy(config)
    for cluster in config["resources"]:
        if cluster["name"] == CLUSTER:
            cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [_endpoint(p) for p in ports]}]
    path = stack.envoy_dir / "cds.yaml"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cds.yaml.")
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{stack.admin_url}/clusters?format=json", timeout=5) as reply:
            statuses = json.load(reply)["cluster_statuses"]
        hosts = next((c.get("host_statuses", []) for c in statuses if c["name"] == CLUSTER), [])
        healthy = {
            h["address"]["socket_address"]["port_value"]
            for h in hosts
            if h.get("health_status", {}).get("eds_health_status") == "HEALTHY"
            and not any(k.startswith("failed") for k in h.get("health_status", {}))
        }
        if healthy == set(ports) and len(hosts) == len(ports):
            return
        time.sleep(0.5)
    raise BenchError(f"Envoy did not settle on catalog endpoints {ports}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.replicas", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)

    try:
        stack, _ = start_stack(Knobs(log_level="warn"))
    except BenchError as err:
        print(f"bench.replicas: FAILED: {err}", file=sys.stderr)
        return 1
    second: subprocess.Popen[bytes] | None = None
    try:
        first_port = stack.topology.port_of(stack.topology.impl_of("catalog"))
        second_port = free_port()
        env = {
            **os.environ,
            "SHOP_LISTEN_ADDR": f"127.0.0.1:{second_port}",
            "SHOP_DB_PATH": str(stack.run_dir / "catalog-replica.db"),
            "SHOP_LOG_LEVEL": "warn",
        }
        log = (stack.run_dir / "catalog-replica.log").open("wb")
        second = subprocess.Popen(
            [str(ROOT / ".tmp" / "bin" / "shop-catalog")], env=env, stdout=log, stderr=log, cwd=ROOT
        )
        ghz = Ghz(GHZ, DESCRIPTOR_SET)
        call = Call("shop.catalog.v1.CatalogService.GetProduct", stack.public_addr, '{"product_id": "sku-tote-bag"}')
        load = Load(args.concurrency, args.connections, args.seconds)
        results: dict[int, list[tuple[float, float, dict[str, float]]]] = {1: [], 2: []}
        for round_no in range(args.rounds):
            for replicas in (1, 2):
                set_endpoints(stack, [first_port, second_port][:replicas])
                ghz.run(call, Load(load.concurrency, load.connections, 1.0), what="warm-up")
                pids = {**cpu.programs(stack), "catalog-replica": second.pid}
                before, start = cpu.sample(pids), time.monotonic()
                result = ghz.run(call, load, what=f"{replicas} replica(s), round {round_no + 1}")
                used = cpu.cores_used(before, cpu.sample(pids), time.monotonic() - start)
                results[replicas].append((result.rps, result.latency_ms[99], used))
                print(
                    f"round {round_no + 1}, {replicas} replica(s): {result.rps:.0f} rps, p99 {result.latency_ms[99]:.1f} ms, cores {used}"
                )
        print()
        print(
            "| catalog replicas | GetProduct rps (median) | p99 ms (median) | catalog cores | Envoy cores | all cores |"
        )
        print("|---|---|---|---|---|---|")
        for replicas, runs in results.items():
            catalog = [sum(v for k, v in u.items() if k.startswith("catalog")) for _, _, u in runs]
            edge = [u.get("envoy", 0.0) for _, _, u in runs]
            total = [sum(u.values()) for _, _, u in runs]
            print(
                f"| {replicas} | {statistics.median(r for r, _, _ in runs):.0f} | {statistics.median(p for _, p, _ in runs):.1f} "
                f"| {statistics.median(catalog):.2f} | {statistics.median(edge):.2f} | {statistics.median(total):.2f} |"
            )
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        return 0
    except BenchError as err:
        print(f"bench.replicas: {err}", file=sys.stderr)
        return 1
    finally:
        if second is not None and second.poll() is None:
            second.terminate()
            second.wait(timeout=20)
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
