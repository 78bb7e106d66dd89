"""The report: Markdown tables (report.md) and a small hand-written SVG chart."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from bench.model import Row


def _by(rows: Sequence[Row], scenario: str) -> dict[str, dict[str, Row]]:
    """scenario's rows as {target: {path: row}}, in the order they ran."""
    found: dict[str, dict[str, Row]] = {}
    for row in rows:
        if row.scenario == scenario and row.runs:
            found.setdefault(row.target, {})[row.path] = row
    return found


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(row: Row, key: str) -> str:
    """The median, with the spread of the rounds when there were several."""
    median = row.median(key)
    if len(row.runs) < 2:
        return _num(median)
    low, high = row.spread(key)
    return f"{_num(median)} ({_num(low)}-{_num(high)})"


def _cores(row: Row, key: str = "rps", top: int = 3) -> str:
    """The busiest processes (cores used) in the round whose figure is the median."""
    runs = sorted(row.runs, key=lambda run: float(run[key]))  # type: ignore[arg-type]
    cores = runs[len(runs) // 2].get("cores") or {}
    assert isinstance(cores, dict)
    return ", ".join(f"{name} {value:.2f}" for name, value in list(cores.items())[:top])


def _cpu_per_request(row: Row, program: str) -> str:
    """Median CPU microseconds a process spent per request: steadier than requests/s on a shared machine."""
    values = []
    for run in row.runs:
        seconds = run.get("cpu_seconds")
        if isinstance(seconds, dict):
            # The process's CPU time over the requests it served in the same
            # window, net of what it spends with no load at all in that time.
            idle = run.get("idle_cpu_seconds") or {}
            assert isinstance(idle, dict)
            count = float(run["count"])  # type: ignore[arg-type]
            net = max(float(seconds.get(program, 0.0)) - float(idle.get(program, 0.0)), 0.0)
            values.append(net / count * 1e6 if count else 0.0)
            continue
        # Reports written before cpu_seconds was recorded: cores used over requests/s.
        cores = run.get("cores") or {}
        assert isinstance(cores, dict)
        rps = float(run["rps"])  # type: ignore[arg-type]
        values.append(float(cores.get(program, 0.0)) / rps * 1e6 if rps else 0.0)
    return f"{statistics.median(values):.0f}" if values else ""


def _cpu_value(row: Row, program: str | None = None) -> float:
    text = _cpu_per_request(row, program or row.program)
    return float(text) if text else 0.0


def _is_floor(row: Row) -> bool:
    return row.program.startswith("floor-")


def ratios(rows: Sequence[Row]) -> dict[str, object]:
    """Each unary row's CPU per request against its language's floor, and
    Envoy's per hop against the bare hop's (report.json's "ratios")."""
    unary = [row for row in rows if row.scenario == "unary" and row.runs]
    floors = {row.lang: _cpu_value(row) for row in unary if _is_floor(row) and row.path == "direct"}
    bare = {row.path: _cpu_value(row, row.proxy) for row in unary if _is_floor(row) and row.proxy}
    found = []
    for row in unary:
        if _is_floor(row):
            continue
        server = _cpu_value(row)
        entry: dict[str, object] = {"target": row.target, "path": row.path, "server_cpu_us": server}
        if floors.get(row.lang):
            entry["server_over_floor"] = round(server / floors[row.lang], 2)
        if row.proxy:
            envoy = _cpu_value(row, row.proxy)
            entry["envoy_cpu_us"] = envoy
            if bare.get(row.path):
                entry["envoy_over_bare_hop"] = round(envoy / bare[row.path], 2)
        found.append(entry)
    # The hop at a fixed rate: Envoy's CPU per request against the bare hop's at the same rate.
    hop = [row for row in rows if row.scenario == "hop" and row.runs and row.proxy]
    bare_fixed = {row.path: _cpu_value(row, row.proxy) for row in hop if _is_floor(row)}
    fixed = []
    for row in hop:
        if _is_floor(row):
            continue
        envoy = _cpu_value(row, row.proxy)
        entry = {"target": row.target, "path": row.path, "envoy_cpu_us": envoy}
        if bare_fixed.get(row.path):
            entry["envoy_over_bare_hop"] = round(envoy / bare_fixed[row.path], 2)
        fixed.append(entry)
    return {
        "floor_cpu_us": floors,
        "bare_hop_cpu_us": bare,
        "rows": found,
        "fixed_rate": {"bare_hop_cpu_us": bare_fixed, "rows": fixed},
    }


def _instrument(program: str) -> bool:
    """A process the bench runs beside the stack (floors, the bare hop, plaintext twins): no part of an order."""
    return program.startswith("floor-") or program == "envoy-bare" or program.endswith("-plaintext")


@dataclass(frozen=True)
class OrderCost:
    """One PlaceOrder row's CPU per order, by process, and the throughput limit it sets."""

    target: str
    orders_per_second: float
    p50_ms: float
    cpu_ms_per_order: dict[str, float]  # by process, largest first

    @property
    def stack_cpu_ms_per_order(self) -> float:
        return round(sum(self.cpu_ms_per_order.values()), 2)

    def limit(self, cpus: int) -> float:
        """The most orders/s the stack could serve with every core busy."""
        total = self.stack_cpu_ms_per_order
        return round(cpus * 1000 / total, 1) if total else 0.0

    def to_json(self, cpus: int) -> dict[str, object]:
        return {
            "target": self.target,
            "orders_per_second": self.orders_per_second,
            "p50_ms": self.p50_ms,
            "cpu_ms_per_order": self.cpu_ms_per_order,
            "stack_cpu_ms_per_order": self.stack_cpu_ms_per_order,
            "orders_per_second_limit": self.limit(cpus),
        }


def cpus_of(facts: dict[str, object]) -> int:
    """The machine's CPU count as the report's facts record it (0 when unknown)."""
    text = str(facts.get("cpus", ""))
    return int(text) if text.isdigit() else 0


def order_costs(rows: Sequence[Row]) -> list[OrderCost]:
    """Where each PlaceOrder row's CPU goes (report.json's "orders").

    Per process, the median over the rounds of its CPU in the run (net of its
    idle CPU) over the orders served, in ms; their sum is what one order costs
    the whole stack (ghz, the load generator, is not counted). Two bounds
    follow from it. Throughput: with every core busy, at most cpus x 1,000 /
    sum orders/s. Latency at one client: the saga's calls are made one after
    another, so nearly all of that CPU is on the order's own path, and p50
    cannot fall below it.
    """
    found: list[OrderCost] = []
    for row in rows:
        if row.scenario != "e2e" or not row.runs:
            continue
        programs: set[str] = set()
        for run in row.runs:
            seconds = run.get("cpu_seconds")
            if isinstance(seconds, dict):
                programs.update(seconds)
        per_order: dict[str, float] = {}
        for program in sorted(programs):
            value = _cpu_value(row, program) / 1000
            if not _instrument(program) and value >= 0.01:
                per_order[program] = round(value, 2)
        found.append(
            OrderCost(
                row.target,
                round(row.median("rps"), 1),
                round(row.median("latency_ms.p50"), 2),
                dict(sorted(per_order.items(), key=lambda item: -item[1])),
            )
        )
    return found


def _ratio(value: float, floor: float | None) -> str:
    return f"{value / floor:.2f}" if value and floor else ""


def _envoy(paths: dict[str, Row]) -> Row | None:
    return next((row for path, row in paths.items() if path.startswith("envoy")), None)


def markdown(meta: dict[str, object], rows: Sequence[Row]) -> str:
    facts = meta["machine"]
    assert isinstance(facts, dict)
    plan = meta["plan"]
    assert isinstance(plan, dict)
    title = f"# Bench report: {meta['mode']} run, {meta['started']}"
    if meta.get("label"):
        title += f" ({meta['label']})"
    out = [title, ""]
    out += [
        f"- CPUs: {facts['cpus']} x {facts['cpu_model']}; load average at start {facts['load_average_at_start']}",
        f"- envoy: {facts['envoy']}",
        f"- go: {facts['go']}; node: {facts['node']}; python: {facts['python']}",
        f"- ghz: {facts['ghz']}",
        f"- git commit: {facts['git_commit']}",
        f"- experiment knobs: {meta['knobs']}; run took {meta['duration_seconds']} s",
        f"- rounds: {plan['rounds']}; each figure is the median of the rounds, (min-max) beside it when there were several",
    ]
    if meta.get("incomplete"):
        out.append(f"- **incomplete**: {meta['incomplete']}")
    skipped = meta.get("skipped") or {}
    assert isinstance(skipped, dict)
    for lang, why in skipped.items():
        out.append(f"- **inventory ({lang}) not measured**: {why}")
    out.append("")

    out += _floors(rows, plan)
    summary = ratios(rows)
    floor_us = summary["floor_cpu_us"]
    bare_us = summary["bare_hop_cpu_us"]
    assert isinstance(floor_us, dict) and isinstance(bare_us, dict)
    unary = _by([row for row in rows if not _is_floor(row)], "unary")
    if unary:
        out += [
            "## Unary reads, closed loop",
            "",
            f"ghz, {plan['concurrency']} concurrent workers on {plan['connections']} HTTP/2 connections, "
            f"{plan['unary_seconds']} s per run after a {plan['warmup_seconds']} s warm-up whose figures are discarded. "
            "Latencies in ms. Public RPCs go through Envoy's public listener, GetPayment (internal) through the "
            "internal one; inventory calls through Envoy are pinned to one implementation with `x-shop-impl`. "
            "CPU µs/request (the process's CPU time over the requests it served, median of the rounds) is the "
            "steadiest figure on a shared machine: other load slows a process down but does not make it spend more "
            "CPU per request.",
            "",
            "",
            "server / floor: the server's CPU per request over its language's bare server's (the floors above), "
            "the figure the services' goal is judged on; Envoy / bare hop: Envoy's CPU per request over the bare "
            "hop's, listener for listener, each at its own closed-loop rate (a slower upstream means fewer "
            "requests per wake-up and more CPU per request: the like-for-like figure is the hop table's).",
            "",
            "| call | path | requests/s | p50 | p90 | p99 | Envoy / direct (requests/s) | Envoy / direct (p50) "
            "| server CPU µs/request | server / floor | Envoy CPU µs/request | Envoy / bare hop "
            "| supervisord CPU µs/request | busiest processes (cores) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for target, paths in unary.items():
            direct = paths.get("direct")
            via = _envoy(paths)
            for path, row in paths.items():
                ratio_rps = ratio_p50 = ""
                if row is via and direct is not None:
                    ratio_rps = f"{row.median('rps') / direct.median('rps'):.2f}"
                    ratio_p50 = f"{row.median('latency_ms.p50') / direct.median('latency_ms.p50'):.2f}"
                envoy_us = _cpu_value(row, row.proxy) if row.proxy else 0.0
                out.append(
                    f"| {target} | {path} | {_cell(row, 'rps')} | {_cell(row, 'latency_ms.p50')} | "
                    f"{_cell(row, 'latency_ms.p90')} | {_cell(row, 'latency_ms.p99')} | {ratio_rps} | {ratio_p50} "
                    f"| {_cpu_per_request(row, row.program)} | {_ratio(_cpu_value(row), floor_us.get(row.lang))} "
                    f"| {f'{envoy_us:.0f}' if row.proxy else ''} | {_ratio(envoy_us, bare_us.get(row.path))} "
                    f"| {_cpu_per_request(row, 'supervisord')} | {_cores(row)} |"
                )
        out.append("")

    hop = _by(rows, "hop")
    if hop:
        out += [
            "## The Envoy hop at a fixed rate, open loop",
            "",
            f"ghz `--rps {plan['hop_rps']}` with {plan['hop_concurrency']} workers (enough that the rate never waits "
            f"for a reply), {plan['hop_seconds']} s per run. Added = through Envoy minus direct, medians. Latencies in ms. "
            "The floor's Envoy is the bare hop (router only).",
            "",
            "Envoy CPU µs/request is the hop's cost at this rate; / bare hop divides it by the bare hop's "
            "(router only, the floor rows) on the same kind of listener at the same rate: the figure the "
            "Envoy goal is judged on, since a proxy's CPU per request grows as its rate falls (fewer requests "
            "share each wake-up of its event loop), so two proxies compare only at the same rate.",
            "",
            "| call | achieved requests/s (direct / Envoy) | p50 direct | p50 Envoy | p50 added | "
            "p99 direct | p99 Envoy | p99 added | Envoy CPU µs/request | / bare hop |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        fixed = ratios(rows)["fixed_rate"]
        assert isinstance(fixed, dict)
        bare_fixed = fixed["bare_hop_cpu_us"]
        for target, paths in hop.items():
            direct = paths.get("direct")
            for via in [row for path, row in paths.items() if path.startswith("envoy")]:
                if direct is None:
                    continue
                add50 = via.median("latency_ms.p50") - direct.median("latency_ms.p50")
                add99 = via.median("latency_ms.p99") - direct.median("latency_ms.p99")
                envoy_us = _cpu_value(via, via.proxy)
                ratio = "" if _is_floor(via) else _ratio(envoy_us, bare_fixed.get(via.path))
                name = f"{target} ({'bare ' if _is_floor(via) else ''}{via.path})"
                out.append(
                    f"| {name} | {direct.median('rps'):.0f} / {via.median('rps'):.0f} | "
                    f"{_cell(direct, 'latency_ms.p50')} | {_cell(via, 'latency_ms.p50')} | {add50:+.2f} | "
                    f"{_cell(direct, 'latency_ms.p99')} | {_cell(via, 'latency_ms.p99')} | {add99:+.2f} "
                    f"| {envoy_us:.0f} | {ratio} |"
                )
        out.append("")

    stream = _by(rows, "stream")
    if stream:
        out += [
            "## Server streaming: WatchStock",
            "",
            f"{plan['watchers']} WatchStock streams on every SKU but the orders' one; a writer sends ImportStock "
            f"streams back to back to the same implementation (each item a change), for {plan['stream_seconds']} s. "
            "messages/s = change messages the watchers received / time from the first write to the last message. "
            "The client is Python on the same cores.",
            "",
            "| stream | path | messages/s | changes written/s | received / expected | busiest processes (cores) |",
            "|---|---|---:|---:|---:|---|",
        ]
        for target, paths in stream.items():
            for path, row in paths.items():
                received = sum(int(run["received"]) for run in row.runs)  # type: ignore[call-overload]
                expected = sum(int(run["expected"]) for run in row.runs)  # type: ignore[call-overload]
                out.append(
                    f"| {target} | {path} | {_cell(row, 'messages_per_second')} | "
                    f"{_cell(row, 'changes_per_second')} | {received:,} / {expected:,} "
                    f"| {_cores(row, 'messages_per_second')} |"
                )
        out.append("")

    e2e = _by(rows, "e2e")
    if e2e:
        out += [
            "## End to end: PlaceOrder through Envoy",
            "",
            "The whole saga (BatchGetProducts, Reserve, Charge, Commit through Envoy's internal listener, every step "
            f"committed to SQLite) from Envoy's public listener; each client its own connection; {plan['e2e_seconds']} s "
            "per run after a warm-up. Every order is checked CONFIRMED afterwards (ListOrders). Latencies in ms.",
            "",
            "| scenario | orders/s | p50 | p90 | p99 | busiest processes (cores) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for target, paths in e2e.items():
            for row in paths.values():
                out.append(
                    f"| {target} | {_cell(row, 'rps')} | {_cell(row, 'latency_ms.p50')} | "
                    f"{_cell(row, 'latency_ms.p90')} | {_cell(row, 'latency_ms.p99')} | {_cores(row, top=5)} |"
                )
        out.append("")
        cpus = cpus_of(facts)
        costs = order_costs(rows)
        if costs and cpus:
            out += [
                "### Where an order's CPU goes, and the limits it sets",
                "",
                "CPU ms per order for each process (its CPU in the run, net of its idle CPU, over the orders; "
                "medians of the rounds) and their sum, the whole stack's cost of one order (ghz not counted). "
                f"With all {cpus} cores busy the stack cannot serve more than {cpus} x 1,000 / sum orders/s; at one "
                "client the saga's calls are serial, so p50 cannot fall below the sum either.",
                "",
                "| scenario | orders/s | limit at full CPU (orders/s) | p50 | stack CPU ms/order | by process (ms/order) |",
                "|---|---:|---:|---:|---:|---|",
            ]
            for cost in costs:
                by_process = ", ".join(f"{name} {value:.2f}" for name, value in cost.cpu_ms_per_order.items())
                out.append(
                    f"| {cost.target} | {_num(cost.orders_per_second)} | {_num(cost.limit(cpus))} "
                    f"| {_num(cost.p50_ms)} | {_num(cost.stack_cpu_ms_per_order)} | {by_process} |"
                )
            out.append("")
    tls = _by(rows, "tls")
    if tls:
        out += [
            "## What TLS costs: mutual TLS and plaintext side by side",
            "",
            "The same cheap read, closed loop as above, against the stack's process (mutual TLS, the operator's "
            "certificate, as Envoy and the tools call it) and against a twin of the same implementation on the "
            "same database started without its TLS files (plaintext). ghz keeps its connections open, so this is "
            "the steady-state cost (encryption per request), not the handshake's. Latencies in ms.",
            "",
            "| call | transport | requests/s | p50 | p99 | server CPU µs/request | TLS / plaintext (CPU per request) "
            "| TLS / plaintext (p50) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for target, paths in tls.items():
            secure, plain = paths.get("mutual TLS"), paths.get("plaintext")
            for path, row in paths.items():
                cpu_ratio = p50_ratio = ""
                if row is secure and plain is not None:
                    a, b = _cpu_value(secure), _cpu_value(plain)
                    cpu_ratio = f"{a / b:.2f}" if a and b else ""
                    p50_ratio = f"{secure.median('latency_ms.p50') / plain.median('latency_ms.p50'):.2f}"
                out.append(
                    f"| {target} | {path} | {_cell(row, 'rps')} | {_cell(row, 'latency_ms.p50')} | "
                    f"{_cell(row, 'latency_ms.p99')} | {_cpu_per_request(row, row.program)} | {cpu_ratio} | {p50_ratio} |"
                )
        out.append("")
    out += [
        "The busiest processes: CPU time each of the stack's processes used during the measured run "
        "(from /proc; supervisord, which copies every program's log lines to files, included; ghz and the "
        "Python streaming client are not counted), in cores, out of "
        f"{facts['cpus']}.",
        "",
    ]
    out += curves_markdown(rows)
    out += _telemetry_overhead(rows, meta.get("sampling_ratio", "?"))
    out += ["![latency and throughput](latency.svg)", ""]
    return "\n".join(out)


def _floors(rows: Sequence[Row], plan: dict[str, object]) -> list[str]:
    """The bare servers and the bare hop (bench/floors.py), as the unary table measures the services."""
    floor_rows = [row for row in rows if row.scenario == "unary" and row.runs and _is_floor(row)]
    if not floor_rows:
        return []
    out = [
        "## Floors: bare servers and a bare Envoy hop",
        "",
        "What each language's gRPC library costs by itself on this machine, measured in the same rounds and "
        f"with the same closed loop as the unary reads below ({plan['concurrency']} workers on "
        f"{plan['connections']} connections): a bare server per language (bench/floor/), grpc.health.v1 Check "
        "only, no interceptors, no logging, no telemetry, the services' pinned gRPC library and mutual TLS; and "
        "a bare Envoy (the stack's binary, flags and workers), a router and nothing else, in front of the Go "
        "floor with the stack's listener and upstream TLS. The services' figures are divided by these.",
        "",
        "| floor | path | requests/s | p50 | p99 | server CPU µs/request | Envoy CPU µs/request "
        "| busiest processes (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in floor_rows:
        out.append(
            f"| {row.target} | {'bare ' + row.path if row.proxy else row.path} | {_cell(row, 'rps')} "
            f"| {_cell(row, 'latency_ms.p50')} | {_cell(row, 'latency_ms.p99')} "
            f"| {_cpu_per_request(row, row.program)} | {_cpu_per_request(row, row.proxy) if row.proxy else ''} "
            f"| {_cores(row)} |"
        )
    out.append("")
    return out


def _cpu_us_per_request(row: Row) -> float:
    """Median CPU microseconds the whole shop (every program, Envoy and supervisord) spent per request."""
    values = []
    for run in row.runs:
        cores = run.get("cores") or {}
        assert isinstance(cores, dict)
        rps = float(run["rps"])  # type: ignore[arg-type]
        values.append(sum(float(v) for v in cores.values()) / rps * 1e6 if rps else 0.0)
    return statistics.median(values) if values else 0.0


def _telemetry_overhead(rows: Sequence[Row], sampling_ratio: object) -> list[str]:
    """Rows measured with telemetry on and off, side by side."""
    suffix = " (telemetry off)"
    on = {(r.scenario, r.target, r.path): r for r in rows if not r.scenario.endswith(suffix)}
    pairs = [
        (on[(r.scenario.removesuffix(suffix), r.target, r.path)], r)
        for r in rows
        if r.scenario.endswith(suffix) and (r.scenario.removesuffix(suffix), r.target, r.path) in on
    ]
    if not pairs:
        return []
    out = [
        "## Telemetry overhead",
        "",
        "The same runs with telemetry on (as `make up`: Envoy's tracer and every service's spans exported to "
        f"Zipkin at stack.toml's sampling ratio {sampling_ratio}, /metrics served and scraped) and off (no tracer in Envoy, sampling 0, no "
        "exporter, no metrics server). CPU is the whole shop's (every service, Envoy, supervisord; not Zipkin "
        "or Prometheus themselves) per request, the median over rounds.",
        "",
        "| scenario | target | path | CPU µs/req on | off | extra | p50 ms on | off | extra |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for with_, without in pairs:
        cpu_on, cpu_off = _cpu_us_per_request(with_), _cpu_us_per_request(without)
        p50_on, p50_off = with_.median("latency_ms.p50"), without.median("latency_ms.p50")
        out.append(
            f"| {with_.scenario} | {with_.target} | {with_.path} | {cpu_on:.0f} | {cpu_off:.0f} | "
            f"{(cpu_on / cpu_off - 1) * 100 if cpu_off else 0:+.0f} % | {p50_on:.2f} | {p50_off:.2f} | "
            f"{(p50_on / p50_off - 1) * 100 if p50_off else 0:+.0f} % |"
        )
    out.append("")
    return out


# -- the chart ----------------------------------------------------------------

_COLORS = {"direct": "#4878a8", "envoy": "#e0884a"}


def _panel(
    x0: float,
    title: str,
    unit: str,
    series: list[tuple[str, float, float]],
    width: float = 430,
) -> list[str]:
    """Horizontal bars: for each label, a direct bar and an Envoy bar."""
    top, bar, gap, label_w = 40.0, 12.0, 14.0, 170.0
    top_value = max([max(d, e) for _, d, e in series] or [1.0]) or 1.0
    scale = (width - label_w - 60) / top_value
    parts = [f'<text x="{x0}" y="20" font-weight="bold">{escape(title)}</text>']
    y = top
    for label, direct, envoy in series:
        parts.append(f'<text x="{x0}" y="{y + bar + 2}" font-size="11">{escape(label)}</text>')
        for i, (kind, value) in enumerate((("direct", direct), ("envoy", envoy))):
            by = y + i * bar
            w = max(value * scale, 1)
            parts.append(
                f'<rect x="{x0 + label_w}" y="{by}" width="{w:.1f}" height="{bar - 2}" fill="{_COLORS[kind]}"/>'
            )
            parts.append(
                f'<text x="{x0 + label_w + w + 4:.1f}" y="{by + bar - 3}" font-size="10">{_num(value)} {unit}</text>'
            )
        y += 2 * bar + gap
    return parts


def svg(rows: Sequence[Row]) -> str:
    unary = _by(rows, "unary")
    hop = _by(rows, "hop")
    throughput = []
    for target, paths in unary.items():
        via = _envoy(paths)
        if "direct" in paths and via is not None:
            throughput.append((target, paths["direct"].median("rps"), via.median("rps")))
    latency = []
    for target, paths in hop.items():
        via = _envoy(paths)
        if "direct" in paths and via is not None:
            for p in ("p50", "p99"):
                latency.append(
                    (f"{target} {p}", paths["direct"].median(f"latency_ms.{p}"), via.median(f"latency_ms.{p}"))
                )
    rows_n = max(len(throughput), len(latency), 1)
    height = 40 + rows_n * 38 + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="900" height="{height}" fill="white"/>',
    ]
    parts += _panel(10, "Closed-loop throughput (requests/s, median)", "rps", throughput)
    parts += _panel(460, "Open-loop latency at a fixed rate (ms, median)", "ms", latency)
    ly = height - 15
    parts.append(f'<rect x="10" y="{ly - 10}" width="12" height="10" fill="{_COLORS["direct"]}"/>')
    parts.append(f'<text x="26" y="{ly}">direct</text>')
    parts.append(f'<rect x="90" y="{ly - 10}" width="12" height="10" fill="{_COLORS["envoy"]}"/>')
    parts.append(f'<text x="106" y="{ly}">through Envoy</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# -- scaling curves -------------------------------------------------------------

_SERIES_COLORS = ("#4878a8", "#e0884a", "#5a9e5a", "#b05a9e", "#8c6d31")


def _curve_points(rows: Sequence[Row], scenario: str) -> dict[str, list[tuple[int, Row]]]:
    """{target: [(load, row), ...]} in order of load: clients (e2e) or watchers (fanout)."""
    found: dict[str, list[tuple[int, Row]]] = {}
    for row in rows:
        if row.scenario != scenario or not row.runs:
            continue
        digits = "".join(ch for ch in (row.target if scenario == "e2e" else row.path).split(",")[-1] if ch.isdigit())
        if digits:
            found.setdefault(row.target if scenario == "fanout" else "orders PlaceOrder", []).append((int(digits), row))
    return {name: sorted(points, key=lambda p: p[0]) for name, points in found.items()}


def curves_markdown(rows: Sequence[Row]) -> list[str]:
    orders = _curve_points(rows, "e2e")
    fanout = _curve_points(rows, "fanout")
    if not fanout and sum(len(p) for p in orders.values()) < 3:
        return []
    out = [
        "## Scaling curves",
        "",
        "Latency against throughput as the load grows, so the point where each part saturates shows: "
        "throughput stops growing while latency keeps rising. PlaceOrder is the e2e scenario above at each "
        "number of clients; WatchStock fans one SKU's changes out to 1 to 1,000 watchers, direct to each "
        "implementation (a writer sends one-item ImportStock calls back to back; latency is from the start "
        "of the ImportStock that wrote a value to a watcher receiving it; the watchers share one connection "
        "per 100 streams). The client is Python on the same cores. Latencies in ms; medians of the rounds. "
        "The chart: [curves.svg](curves.svg).",
        "",
        "| scenario | load | throughput (/s) | p50 | p90 | p99 | busiest processes (cores) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for points in orders.values():
        for load, row in points:
            out.append(
                f"| orders PlaceOrder | {load} client{'s' if load > 1 else ''} | {_cell(row, 'rps')} orders "
                f"| {_cell(row, 'latency_ms.p50')} | {_cell(row, 'latency_ms.p90')} | {_cell(row, 'latency_ms.p99')} "
                f"| {_cores(row, top=4)} |"
            )
    for name, points in fanout.items():
        for _, row in points:
            out.append(
                f"| {name} | {row.path} | {_cell(row, 'messages_per_second')} messages "
                f"| {_cell(row, 'latency_ms.p50')} | {_cell(row, 'latency_ms.p90')} | {_cell(row, 'latency_ms.p99')} "
                f"| {_cores(row, 'messages_per_second', top=3)} |"
            )
    out += ["", "![scaling curves](curves.svg)", ""]
    return out


def _log_scale(values: list[float], low: float, high: float) -> tuple[int, int, Callable[[float], float]]:
    """A log10 axis over values, from low to high pixels; returns its decades and the mapping."""
    positive = [v for v in values if v > 0] or [1.0]
    lo = math.floor(math.log10(min(positive)))
    hi = math.ceil(math.log10(max(positive)))
    if hi == lo:
        hi += 1

    def at(value: float) -> float:
        return low + (math.log10(max(value, 10**lo)) - lo) / (hi - lo) * (high - low)

    return lo, hi, at


def _curve_panel(
    x0: float, title: str, xlabel: str, series: list[tuple[str, list[tuple[float, float, str]]]]
) -> list[str]:
    """One log-log chart: a line per series through (throughput, latency) points labelled by their load."""
    width, height, left, top, bottom = 430.0, 300.0, 50.0, 40.0, 50.0
    xs = [x for _, pts in series for x, _, _ in pts]
    ys = [y for _, pts in series for _, y, _ in pts]
    xlo, xhi, fx = _log_scale(xs, x0 + left, x0 + width - 10)
    ylo, yhi, fy_up = _log_scale(ys, 0, height - top - bottom)

    def fy(value: float) -> float:
        return height - bottom - fy_up(value)

    parts = [f'<text x="{x0}" y="20" font-weight="bold">{escape(title)}</text>']
    for decade in range(xlo, xhi + 1):
        x = fx(10**decade)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{_num(10**decade)}</text>'
        )
    for decade in range(ylo, yhi + 1):
        y = fy(10**decade)
        parts.append(f'<line x1="{x0 + left}" y1="{y:.1f}" x2="{x0 + width - 10}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{x0 + left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{_num(10**decade)}</text>'
        )
    parts.append(
        f'<text x="{x0 + left + (width - left) / 2:.0f}" y="{height - bottom + 30}" text-anchor="middle" '
        f'font-size="11">{escape(xlabel)} (log)</text>'
    )
    parts.append(
        f'<text x="{x0 + 12}" y="{(height - bottom + top) / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 12} {(height - bottom + top) / 2:.0f})">latency, ms (log)</text>'
    )
    for i, (name, pts) in enumerate(series):
        color = _SERIES_COLORS[i % len(_SERIES_COLORS)]
        dash = ' stroke-dasharray="4 3"' if name.endswith("p99") else ""
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y, _ in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y, label in pts:
            parts.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{color}"/>')
            parts.append(f'<text x="{fx(x) + 5:.1f}" y="{fy(y) - 5:.1f}" font-size="10">{escape(label)}</text>')
        ly = height - 12
        lx = x0 + left + i * 95
        parts.append(f'<rect x="{lx}" y="{ly + 4}" width="12" height="3" fill="{color}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly + 9}" font-size="10">{escape(name)}</text>')
    return parts


def curves_svg(rows: Sequence[Row]) -> str:
    """curves.svg: PlaceOrder's and WatchStock's latency against throughput, a point per load."""
    orders = _curve_points(rows, "e2e")
    fanout = _curve_points(rows, "fanout")
    order_series = []
    for points in orders.values():
        for p in ("p50", "p99"):
            order_series.append(
                (f"PlaceOrder {p}", [(row.median("rps"), row.median(f"latency_ms.{p}"), str(n)) for n, row in points])
            )
    watch_series = [
        (
            name.removeprefix("inventory WatchStock ").strip("()") + " p50",
            [(row.median("messages_per_second"), row.median("latency_ms.p50"), str(n)) for n, row in points],
        )
        for name, points in fanout.items()
        if all(row.runs and row.runs[0].get("latency_ms") for _, row in points)
    ]
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="900" height="300" font-family="sans-serif" font-size="12">',
        '<rect width="900" height="300" fill="white"/>',
    ]
    parts += _curve_panel(10, "PlaceOrder: latency vs orders/s (label: clients)", "orders/s", order_series)
    parts += _curve_panel(
        460, "WatchStock fan-out: latency vs messages/s (label: watchers)", "messages/s", watch_series
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
