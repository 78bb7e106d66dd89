"""The bench's instruments, checked without timing anything (docs/performance.md).

`make profile` refuses a wrong SERVICE or SCENARIO before building, naming
the right ones; the floors run on the services' pinned gRPC libraries; the
bare Envoy hop's configuration is one Envoy accepts; the report divides each
row by its own language's floor and Envoy by the bare hop of the same kind of
listener.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from bench import floors, report, run
from bench.model import Knobs, Row
from shopstack import pki, topology
from shopstack.stack import VENV_BIN, Stack
from shopstack.topology import ROOT

# What `make build` prints when it runs: none of it may appear before a bad argument is refused.
BUILD_STEPS = ("go build", "npm run", "pip install")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["SERVICE=nope", "SCENARIO=unary"], "there is no service or program 'nope'; SERVICE is one of catalog-go, "),
        (["SERVICE=inventory", "SCENARIO=unary"], "inventory has 3 implementations; name one: inventory-node, "),
        (
            ["SERVICE=orders", "SCENARIO=soak"],
            "there is no scenario 'soak'; SCENARIO is one of unary, hop, stream, e2e",
        ),
        (
            ["SERVICE=inventory-go", "SCENARIO=e2e"],
            "the e2e scenario sends no load to inventory-go; it loads orders-python, catalog-go, inventory-node, "
            "payments-python. Scenarios that load inventory-go: unary, hop, stream",
        ),
        (["SCENARIO=unary"], "SERVICE is missing; it is one of "),
        (["SERVICE=payments"], "SCENARIO is missing; it is one of unary, hop, stream, e2e"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_make_profile_refuses_a_wrong_argument_before_building(args: list[str], expected: str) -> None:
    result = make("profile", *args)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert expected in out
    assert not [step for step in BUILD_STEPS if step in out], out


def _requires(go_mod: Path) -> dict[str, str]:
    text = go_mod.read_text()
    return dict(re.findall(r"^\s*(?:require\s+)?([\w./-]+\.[\w./-]+)\s+(v[^\s]+)", text, re.MULTILINE))


def test_the_go_floor_builds_on_go_service_versions() -> None:
    """Every module the floor requires that go_service pins too is at go_service's version (grpc-go first)."""
    floor = _requires(ROOT / "bench" / "floor" / "go" / "go.mod")
    service = _requires(ROOT / "go_service" / "go.mod")
    assert "google.golang.org/grpc" in floor
    differ = {m: (v, service[m]) for m, v in floor.items() if m in service and v != service[m]}
    assert not differ, f"bench/floor/go/go.mod differs from go_service/go.mod (floor, service): {differ}"


def _assert_envoy_accepts(config: Path) -> None:
    """The pinned Envoy's own check of a configuration file (--mode validate)."""
    result = subprocess.run(
        [str(VENV_BIN / "envoy"), "--mode", "validate", "--disable-hot-restart", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_accepts_the_bare_hop(tmp_path: Path) -> None:
    topo = topology.load()
    stack = Stack(run_dir=tmp_path, topology=topo)
    pki.make_all(stack.certs, topo.identities())
    config = tmp_path / "envoy-bare.yaml"
    config.write_text(yaml.safe_dump(floors.bare_envoy(stack, 10001, 10002, "127.0.0.1:10003")))
    _assert_envoy_accepts(config)


def _row(target: str, path: str, program: str, lang: str, proxy: str, cpu: dict[str, float]) -> Row:
    run = {"count": 1000, "rps": 1000.0, "cpu_seconds": cpu, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0}}
    return Row("unary", target, path, runs=[run], program=program, lang=lang, proxy=proxy)


def test_the_ratios_divide_by_the_same_languages_floor_and_the_same_listeners_bare_hop() -> None:
    rows = [
        _row("floor health Check (go)", "direct", "floor-go", "go", "", {"floor-go": 0.05}),
        _row("floor health Check (go)", "envoy public", "floor-go", "go", "envoy-bare", {"envoy-bare": 0.1}),
        _row("floor health Check (go)", "envoy internal", "floor-go", "go", "envoy-bare", {"envoy-bare": 0.08}),
        _row("floor health Check (python)", "direct", "floor-python", "python", "", {"floor-python": 0.3}),
        _row(
            "catalog GetProduct (go)", "envoy public", "catalog-go", "go", "envoy", {"catalog-go": 0.1, "envoy": 0.15}
        ),
        _row(
            "payments GetPayment (python)",
            "envoy internal",
            "payments-python",
            "python",
            "envoy",
            {"payments-python": 0.45, "envoy": 0.12},
        ),
    ]
    found = report.ratios(rows)
    assert found["floor_cpu_us"] == {"go": 50.0, "python": 300.0}
    assert found["bare_hop_cpu_us"] == {"envoy public": 100.0, "envoy internal": 80.0}
    by_target = {entry["target"]: entry for entry in found["rows"]}  # type: ignore[union-attr, index]
    assert by_target["catalog GetProduct (go)"]["server_over_floor"] == 2.0
    assert by_target["catalog GetProduct (go)"]["envoy_over_bare_hop"] == 1.5
    assert by_target["payments GetPayment (python)"]["server_over_floor"] == 1.5
    assert by_target["payments GetPayment (python)"]["envoy_over_bare_hop"] == 1.5
    text = report.markdown(
        {
            "mode": "quick",
            "started": "now",
            "machine": dict.fromkeys(
                ("cpus", "cpu_model", "load_average_at_start", "envoy", "go", "node", "python", "ghz", "git_commit"),
                "x",
            ),
            "plan": {"rounds": 1, "concurrency": 8, "connections": 2, "unary_seconds": 1, "warmup_seconds": 0.3},
            "knobs": {},
            "duration_seconds": 1,
        },
        rows,
    )
    assert "## Floors: bare servers and a bare Envoy hop" in text
    assert "| catalog GetProduct (go) | envoy public |" in text


def test_make_profile_passes_its_node_flags_to_the_node_program_only() -> None:
    # Programs start as `sh -c '<redirect to the log>' node <script>`; the flags go after `node`.
    flags = "--cpu-prof --cpu-prof-dir=/tmp/profile-dir"
    text = run.make_stack(["node"], Knobs(node_flags=flags)).supervisord_conf()
    commands = [line for line in text.splitlines() if line.startswith("command=")]
    with_flags = [line for line in commands if flags in line]
    assert len(with_flags) == 1, commands
    assert re.search(rf"' node {re.escape(flags)} \S+/node_service/dist/src/inventory/main\.js$", with_flags[0])


def test_an_orders_cost_is_the_stacks_cpu_per_order_and_bounds_its_rate() -> None:
    def run(rps: float, cpu: dict[str, float]) -> dict[str, object]:
        return {
            "count": 500,
            "rps": rps,
            "latency_ms": {"p50": 10.0, "p90": 12.0, "p99": 15.0},
            "cpu_seconds": cpu,
            "idle_cpu_seconds": {"envoy": 0.5},
        }

    # 500 orders: orders 2.5 s (5 ms/order), Envoy 1.5 s less 0.5 s idle
    # (2 ms), catalog 0.5 s (1 ms); the floor and the plaintext twin are the
    # bench's own processes, and a process under 0.01 ms/order is left out.
    cpu = {"orders-python": 2.5, "envoy": 1.5, "catalog-go": 0.5, "floor-go": 3.0, "catalog-go-plaintext": 1.0}
    rows = [
        Row(
            "e2e",
            "orders PlaceOrder, 16 clients",
            "envoy public",
            runs=[run(100.0, cpu), run(120.0, {**cpu, "orders-python": 3.0}), run(90.0, cpu)],
            program="orders-python",
            lang="python",
            proxy="envoy",
        )
    ]
    (cost,) = report.order_costs(rows)
    assert cost.cpu_ms_per_order == {"orders-python": 5.0, "envoy": 2.0, "catalog-go": 1.0}
    assert list(cost.cpu_ms_per_order) == ["orders-python", "envoy", "catalog-go"]
    assert cost.stack_cpu_ms_per_order == 8.0
    assert cost.limit(cpus=2) == 250.0
    assert cost.orders_per_second == 100.0


def test_a_second_bench_in_the_same_checkout_is_refused_while_the_first_holds_the_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starting a bench stack stops whatever stack is in the run directory, so
    # a second bench command would kill the first one's run: it must refuse.
    from bench import run

    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "_RUN_LOCK", None)
    # The holder is another process that holds the lock as claim_run_dir does: an flock, its pid inside.
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write(f'{os.getpid()}\\n'); f.flush(); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "bench-run.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(
            run.BenchError, match=rf"another bench or profile is running in this checkout \(pid {holder.pid}\)"
        ):
            run.claim_run_dir()
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone, however it ended, the directory is free again.
    run.claim_run_dir()
    assert (tmp_path / "bench-run.lock").read_text() == f"{__import__('os').getpid()}\n"
    run._RUN_LOCK.close()  # type: ignore[union-attr]


def test_a_bench_stopped_with_sigterm_runs_its_clean_up(tmp_path: Path) -> None:
    # `kill PID` must stop a bench's stack and floors as Ctrl-C does, through
    # its finally blocks, instead of leaving them running.
    script = (
        "import pathlib, sys, time\n"
        "from bench import run\n"
        "run.RESULTS = pathlib.Path(sys.argv[1])\n"
        "run.claim_run_dir()\n"
        "try:\n"
        "    print('running', flush=True)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        "    (run.RESULTS / 'cleaned-up').write_text('yes')\n"
    )
    bench = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", script, str(tmp_path)],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'deploy'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert bench.stdout is not None and bench.stdout.readline().strip() == "running"
        bench.terminate()
        bench.wait(timeout=30)
    finally:
        bench.kill()
    assert (tmp_path / "cleaned-up").read_text() == "yes"


def test_the_access_log_variant_keeps_the_stacks_access_log_and_the_router_alone(tmp_path: Path) -> None:
    from bench import envoy_filters

    stack = Stack(run_dir=tmp_path, topology=topology.load())
    stack.render()
    generated = yaml.safe_load((stack.envoy_dir / "envoy.yaml").read_text())
    (change,) = [c for label, c in envoy_filters.variants(generated) if label.startswith("router and the access log")]
    config = yaml.safe_load((stack.envoy_dir / "envoy.yaml").read_text())
    change(config)
    for name, hcm in envoy_filters._hcms(config).items():
        assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"], name
        assert hcm["access_log"] == envoy_filters._hcms(generated)[name]["access_log"], name
        assert "tracing" not in hcm, name
    (stack.envoy_dir / "variant.yaml").write_text(yaml.safe_dump(config))
    _assert_envoy_accepts(stack.envoy_dir / "variant.yaml")
