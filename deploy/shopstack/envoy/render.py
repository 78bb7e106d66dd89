"""Writing the configuration: the files Envoy watches, and one inlined form for validation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from shopstack.envoy.bootstrap import bootstrap
from shopstack.envoy.common import Mode, Routing, default_routing
from shopstack.envoy.dynamic import clusters, routes
from shopstack.topology import Topology, methods


def static_bootstrap(topology: Topology, mode: Mode, routing: Routing | None = None) -> dict[str, Any]:
    """The same configuration with clusters and routes inlined.

    `envoy --mode validate` checks only a bootstrap's static parts, so the
    tests validate this form to check the dynamic files' contents too.
    """
    routing = routing or default_routing(topology)
    rpcs = methods()
    config = bootstrap(topology, mode)
    del config["dynamic_resources"]
    config["static_resources"]["clusters"] += [
        {k: v for k, v in c.items() if k != "@type"} for c in clusters(topology, routing, mode)["resources"]
    ]
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        route_config = routes(topology, routing, listener["name"], rpcs, web_dir=mode.web_dir)["resources"][0]
        del hcm["rds"]
        hcm["route_config"] = {k: v for k, v in route_config.items() if k != "@type"}
    return config


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so Envoy's directory watch never sees half a file."""
    text = yaml.safe_dump(data, sort_keys=False, width=120)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def render(
    topology: Topology,
    out_dir: Path,
    mode: Mode,
    routing: Routing | None = None,
    *,
    descriptor_set: Path | None = None,
    bootstrap_too: bool = True,
) -> None:
    """Write envoy.yaml (unless bootstrap_too is False) and the dynamic files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    routing = routing or default_routing(topology)
    rpcs = methods(descriptor_set) if descriptor_set else methods()
    # Clusters first: a route must never name a cluster Envoy does not have.
    _write_atomic(out_dir / "cds.yaml", clusters(topology, routing, mode))
    for listener in ("public", "internal"):
        _write_atomic(out_dir / f"rds_{listener}.yaml", routes(topology, routing, listener, rpcs, web_dir=mode.web_dir))
    if bootstrap_too:
        _write_atomic(out_dir / "envoy.yaml", bootstrap(topology, mode))
