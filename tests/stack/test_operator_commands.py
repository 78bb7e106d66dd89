"""The operator commands name the fix: a wrong name lists the right ones, and
`make up` on a running stack says what it does.

The argument checks run `make` itself (they must fail before any build). The
`up` cases drive `python -m shopstack` (what `make up` runs after building) on
a private stack: its own run directory (SHOP_RUN_DIR) and a copy of
deploy/stack.toml on free ports (SHOP_STACK_FILE), whose catalog runs a copy
of the catalog binary so the test can change "the code it runs".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shopstack import topology
from shopstack.stack import Stack, free_port
from shopstack.topology import ROOT, STACK_FILE

CATALOG_BINARY = ROOT / ".tmp" / "bin" / "shop-catalog"
# What `make build` prints when it runs: none of it may appear before a bad argument is refused.
BUILD_STEPS = ("go build", "npm run", "pip install")


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["swap", "SERVICE=inventory", "IMPL=rust"],
            "inventory has no 'rust' implementation; IMPL must be node, go or python",
        ),
        (["swap", "SERVICE=catalog", "IMPL=python"], "catalog has only one implementation (go)"),
        (["swap"], "SERVICE is missing: make swap SERVICE=inventory IMPL=node|go|python"),
        (["canary", "SERVICE=inventory", "IMPL=go", "WEIGHT=150"], "WEIGHT must be a whole percentage from 0 to 100"),
        (["up", "INVENTORY=rust"], "INVENTORY must be node, go or python"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_wrong_name_lists_the_valid_ones_before_any_build(args: list[str], expected: str) -> None:
    result = make(*args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
    assert not [step for step in BUILD_STEPS if step in output], f"something was built first:\n{output}"


@dataclass
class Cli:
    """`python -m shopstack` on a private stack."""

    env: dict[str, str]
    catalog: Path  # the copy of the catalog binary the private stack runs

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shopstack", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return output

    def stack(self) -> Stack:
        """The private stack (its run directory and ports) as an object of this process."""
        run_dir = Path(self.env["SHOP_RUN_DIR"])
        ports = dict(json.loads((run_dir / "state.json").read_text())["ports"])
        topo = topology.load(Path(self.env["SHOP_STACK_FILE"]))
        topo = topo.with_ports(ports.pop("public"), ports.pop("internal"), ports.pop("admin"), ports)
        return Stack(run_dir=run_dir, topology=topo)

    def state(self) -> dict[str, Any]:
        """The stack as the commands left it (state.json), with each program's pid."""
        stack = self.stack()
        state = json.loads(stack.state_file.read_text())
        state["pids"] = {name: stack.pid_of(name) for name in state["code"]}
        return state


def private_topology(tmp: Path, catalog: Path) -> Path:
    """deploy/stack.toml with every port free (gRPC, metrics, telemetry), with the catalog running `catalog`."""
    text = STACK_FILE.read_text()
    text = re.sub(
        r"^(\w*port) = \d+$",
        lambda match: f"{match.group(1)} = {free_port()}",
        text,
        flags=re.MULTILINE,
    )
    text = text.replace("{root}/.tmp/bin/shop-catalog", str(catalog))
    path = tmp / "stack.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    tmp = tmp_path_factory.mktemp("operator")
    catalog = tmp / "shop-catalog"
    shutil.copy2(CATALOG_BINARY, catalog)
    env = {
        **os.environ,
        "SHOP_RUN_DIR": str(tmp / "run"),
        "SHOP_STACK_FILE": str(private_topology(tmp, catalog)),
        "PYTHONPATH": str(ROOT / "deploy"),
    }
    commands = Cli(env=env, catalog=catalog)
    try:
        yield commands
    finally:
        commands.run("down")


def test_up_on_a_running_stack_says_so_and_restarts_nothing_unchanged(cli: Cli) -> None:
    first = cli.ok("up", "--no-telemetry")
    assert "The shop is up." in first
    pids = cli.state()["pids"]

    again = cli.ok("up", "--no-telemetry")
    assert "the stack is already running" in again, again
    assert "nothing restarted" in again, again
    assert cli.state()["pids"] == pids


def test_up_restarts_the_programs_whose_code_changed_and_says_which(cli: Cli) -> None:
    before = cli.state()["pids"]
    # A rebuilt binary: different bytes, same behaviour (trailing bytes after an ELF image are ignored).
    rebuilt = cli.catalog.with_name("shop-catalog.new")
    shutil.copy2(cli.catalog, rebuilt)
    with rebuilt.open("ab") as handle:
        handle.write(b"rebuilt")
    os.replace(rebuilt, cli.catalog)

    output = cli.ok("up", "--no-telemetry")
    assert "the stack is already running" in output, output
    assert "restarted catalog-go: the code they run changed" in output, output
    after = cli.state()["pids"]
    assert after["catalog-go"] != before["catalog-go"], output
    unchanged = {name: pid for name, pid in before.items() if name != "catalog-go"}
    assert {name: after[name] for name in unchanged} == unchanged, output


def test_up_with_another_inventory_on_a_running_stack_swaps_it_live(cli: Cli) -> None:
    assert cli.state()["routing"]["inventory"] == {"node": 100}
    output = cli.ok("up", "--no-telemetry", "--inventory", "go")
    assert "inventory runs on node 100%; swapping it to go live" in output, output
    assert "inventory now runs on go" in output, output
    current = cli.state()
    assert current["routing"]["inventory"] == {"go": 100}
    with cli.stack().public_channel() as channel:
        reply = inventory_grpc.InventoryServiceStub(channel).GetStock(
            inventory_pb.GetStockRequest(skus=["sku-tote-bag"]), timeout=15
        )
    assert reply.levels[0].sku == "sku-tote-bag"


def test_logs_of_an_unknown_program_lists_the_names(cli: Cli) -> None:
    result = make("logs", "SERVICE=nope", env=cli.env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "no program is called 'nope'" in output, output
    for name in ("catalog-go", "envoy", "inventory-go", "orders-python", "payments-python"):
        assert name in output, output
