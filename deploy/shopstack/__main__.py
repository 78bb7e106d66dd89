"""`python -m shopstack <command>`: the local stack's controls (the Makefile calls these)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shopstack import check, containers, envoy, k8s, swap, tokens, topology
from shopstack.stack import Stack, StackError, default_stack, die, remove_data

EXAMPLES = """\
The shop is up.

  storefront             https://localhost:{public}/   (open it in a browser; it must trust the CA below)
  gRPC, gRPC-Web, JSON   localhost:{public}   (Envoy public listener, TLS)
  internal gRPC          127.0.0.1:{internal} (service-to-service; mutual TLS, RBAC by identity)
  Envoy admin            http://127.0.0.1:{admin}   (/stats/prometheus)
  certificates           {certs}   (make certs rotates them; docs/security.md)
  traces (Zipkin UI)     http://127.0.0.1:{zipkin}   (every response carries its x-trace-id; {sampled} of API calls are recorded, every storefront call, and any call sent with a sampled traceparent)
  metrics (Prometheus)   http://127.0.0.1:{prometheus}   (docs/observability.md has queries)
  run directory          {run}   (logs: make logs; state: make status; stop: make down)

Try:
  CA={certs}/ca.crt
  TOKEN=$(make -s token CUSTOMER=ada)
  .tmp/bin/grpcurl -cacert $CA localhost:{public} list
  .tmp/bin/grpcurl -cacert $CA -d '{{"page_size": 3, "tag": "coffee"}}' localhost:{public} shop.catalog.v1.CatalogService/ListProducts
  .tmp/bin/grpcurl -cacert $CA -d '{{"skus": ["sku-espresso-beans-1kg"]}}' localhost:{public} shop.inventory.v1.InventoryService/GetStock
  .tmp/bin/grpcurl -cacert $CA -H "authorization: Bearer $TOKEN" -d '{{"request_id": "demo-1", "payment_token": "tok_success", "lines": [{{"product_id": "sku-espresso-beans-1kg", "quantity": 2}}]}}' localhost:{public} shop.orders.v1.OrderService/PlaceOrder
  .tmp/bin/grpcurl -v -cacert $CA -H "traceparent: 00-$(openssl rand -hex 16)-$(openssl rand -hex 8)-01" -d '{{"product_id": "sku-tote-bag"}}' localhost:{public} shop.catalog.v1.CatalogService/GetProduct   # traced whatever the ratio: open its x-trace-id in Zipkin
  curl -s --cacert $CA 'https://localhost:{public}/v1/products?page_size=2'
  curl -s --cacert $CA -X POST https://localhost:{public}/v1/orders -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{{"request_id": "demo-2", "payment_token": "tok_success", "lines": [{{"product_id": "sku-tote-bag", "quantity": 1}}]}}'
"""


def cmd_up(args: argparse.Namespace) -> None:
    topo = topology.load()
    _check(lambda: check.check_up(topo, args.inventory or ""))
    running = default_stack()
    if running.supervisord_pid() is not None:
        _up_again(running, args.inventory)
        return
    telemetry = not args.no_telemetry
    stack = Stack(run_dir=running.run_dir, topology=topo, telemetry=telemetry)
    if args.inventory:
        topo = topo.with_impl("inventory", args.inventory)
        stack = Stack(run_dir=stack.run_dir, topology=topo, telemetry=telemetry)
    try:
        stack.up()
    except StackError as err:
        die(str(err))
    print(
        EXAMPLES.format(
            public=topo.public_port,
            internal=topo.internal_port,
            admin=topo.admin_port,
            zipkin=topo.telemetry.zipkin_port,
            prometheus=topo.telemetry.prometheus_port,
            sampled=f"{topo.telemetry.sampling_ratio:.0%}",
            run=stack.run_dir,
            certs=stack.certs.directory,
        )
    )
    print(stack.status())


def _up_again(stack: Stack, inventory: str | None) -> None:
    """`make up` on a stack that is already running: bring it up to date, say what changed."""
    print(f"the stack is already running (run directory {stack.run_dir})")
    try:
        restarted = stack.restart_changed()
        if restarted:
            print(f"restarted {', '.join(restarted)}: the code they run changed since they started")
        else:
            print("every program runs the code just built; nothing restarted")
        current = stack.routing["inventory"]
        if inventory and list(current) != [inventory]:
            now = ", ".join(f"{lang} {weight}%" for lang, weight in sorted(current.items()))
            print(
                f"inventory runs on {now}; swapping it to {inventory} live "
                f"(what `make swap SERVICE=inventory IMPL={inventory}` does)"
            )
            swap.swap(stack, "inventory", inventory)
            print(f"inventory now runs on {inventory}")
    except StackError as err:
        die(str(err))
    print(stack.status())


def _check(run: Callable[[], object]) -> None:
    try:
        run()
    except check.UsageError as err:
        die(str(err))


def cmd_down(_: argparse.Namespace) -> None:
    stack = default_stack()
    if stack.supervisord_pid() is None:
        print("the stack is not running")
        return
    try:
        stack.down()
    except StackError as err:
        die(str(err))
    print("the stack is stopped; its data stays in", stack.data_dir)


def cmd_status(_: argparse.Namespace) -> None:
    stack = default_stack()
    if stack.supervisord_pid() is None:
        print(f"the stack is not running (run directory {stack.run_dir})")
        return
    print(stack.status())


def cmd_logs(args: argparse.Namespace) -> None:
    stack = default_stack()
    logs = sorted(stack.logs_dir.glob("*.log")) if stack.logs_dir.exists() else []
    if not logs:
        die(f"no logs in {stack.logs_dir}; is the stack up (`make up`)?")
    if args.service:
        names = [p.stem for p in logs]
        logs = [p for p in logs if p.stem.startswith(args.service)]
        if not logs:
            services = sorted({name.split("-")[0] for name in names})
            die(
                f"no program is called {args.service!r}; SERVICE is a program "
                f"({', '.join(names)}) or a service, for all of its programs ({', '.join(services)})"
            )
    if args.follow:
        subprocess.run(["tail", "-n", str(args.lines), "-F", *map(str, logs)], check=False)
        return
    for path in logs:
        print(stack.tail(path.stem, args.lines))


def _running_stack() -> Stack:
    stack = default_stack()
    if stack.supervisord_pid() is None:
        die("the stack is not running; `make up` first")
    return stack


def cmd_swap(args: argparse.Namespace) -> None:
    _check(lambda: check.check_impl(topology.load(), args.service, args.impl, "swap"))
    stack = _running_stack()
    try:
        swap.swap(stack, args.service, args.impl)
    except (StackError, KeyError, ValueError) as err:
        die(str(err))
    print(f"{args.service} now runs on {args.impl}")
    print(stack.status())


def cmd_canary(args: argparse.Namespace) -> None:
    _check(lambda: check.check_impl(topology.load(), args.service, args.impl, "canary"))
    _check(lambda: check.check_weight(args.weight))
    weight = int(args.weight)
    stack = _running_stack()
    try:
        swap.canary(stack, args.service, args.impl, weight)
    except (StackError, KeyError, ValueError) as err:
        die(str(err))
    weights = ", ".join(f"{lang} {w}%" for lang, w in sorted(stack.routing[args.service].items()))
    print(f"{args.service} traffic: {weights}; send `x-shop-impl: <impl>` to pin one call")


def cmd_clean_data(_: argparse.Namespace) -> None:
    stack = default_stack()
    remove_data(stack)
    print("removed", stack.data_dir)


def cmd_render_docker(args: argparse.Namespace) -> None:
    """Envoy's configuration for Docker Compose: same generator, container addresses."""
    topo = topology.load()
    out = Path(args.out)
    envoy.render(topo, out, envoy.docker_mode())
    # The container's Envoy runs as uid 10001: the mounted files must be
    # readable by all, and a directory (docs/, from an earlier run) searchable.
    for path in out.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def cmd_k8s_manifests(args: argparse.Namespace) -> None:
    """deploy/k8s/: the kustomize base and overlays, from the topology."""
    written = k8s.write(Path(args.out), topology.load(), k8s.settings())
    print(f"wrote {len(written)} files under {args.out}")


def cmd_k8s_secrets(args: argparse.Namespace) -> None:
    """The certificate files deploy/k8s's secretGenerator reads (git-ignored)."""
    stack = default_stack()
    try:
        written = k8s.stage_secret_files(stack.certs.directory, Path(args.out), stack.topology)
    except FileNotFoundError as err:
        die(str(err))
    print(f"wrote {len(written)} certificate files for the Kubernetes Secrets under {args.out}")


def cmd_containers(args: argparse.Namespace) -> None:
    """docker-compose.yml with Docker, or podman where no Docker daemon answers."""
    try:
        if args.action == "certs":
            written = containers.stage_certs()
            print(f"{len(written)} certificate files for the containers in {containers.CONTAINER_CERTS}")
            return
        engine = containers.detect()
        project = containers.Project()
        if args.action == "build":
            seconds = containers.build(engine, project, args.bases)
            print(f"built every image in {seconds:.0f} s with {engine.name}")
        elif args.action == "up":
            containers.up(engine, project)
            edge = containers.edge_of(engine, project, internal=False)
            print(f"The shop runs in containers ({engine.name}, project {project.name}).")
            print(f"  gRPC, gRPC-Web, JSON   {edge['public']}   (Envoy public listener)")
            print(f"  Envoy admin            http://{edge['admin']}")
            print("  stop: make docker-down (the named volumes keep the data)")
        elif args.action == "down":
            containers.down(engine, project)
        elif args.action == "test":
            sys.exit(containers.compose_test(engine, args.bases, args.pytest_args))
    except containers.ContainerError as err:
        die(str(err))


def cmd_hosts(args: argparse.Namespace) -> None:
    """Several hosts on one machine (deploy/hosts.toml, network namespaces)."""
    from shopstack import netns

    try:
        sys.exit(netns.test(args.pytest_args, args.suite))
    except (netns.NetnsError, ValueError) as err:
        die(str(err))


def cmd_demo(_: argparse.Namespace) -> None:
    from shopstack import demo

    stack = _running_stack()
    try:
        demo.tour(stack)
    except StackError as err:
        die(str(err))


def cmd_render_examples(_: argparse.Namespace) -> None:
    """The committed configuration of the default local stack (envoy/local/, deploy/local/)."""
    from shopstack import examples

    changed = examples.write()
    for path in changed:
        print("rewrote", path)
    if not changed:
        print("the committed configuration is up to date")


def cmd_certs(args: argparse.Namespace) -> None:
    """Issue (rotate) the CA's certificates and the token key into a run directory."""
    stack = default_stack()
    if args.run_dir:
        stack = Stack(run_dir=Path(args.run_dir), topology=stack.topology)
    if args.if_missing:
        made = stack.ensure_certs()
    else:
        stack.make_certs()
        made = True
    certs = stack.certs
    if made:
        print(f"certificates and token key written to {certs.directory} (CA: {certs.ca})")
    if stack.supervisord_pid() is not None and made:
        print("the stack is running: `make down && make up` to load the new certificates")


def cmd_token(args: argparse.Namespace) -> None:
    """Print a customer token signed by the local issuer."""
    stack = default_stack()
    stack.ensure_certs()
    scopes = [args.scope] if args.scope else []
    print(tokens.issue(stack.certs, stack.topology.security, args.customer, scopes=scopes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shopstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and wait until it is healthy")
    up.add_argument("--inventory", help="the inventory implementation to run (node, go or python)")
    up.add_argument(
        "--no-telemetry",
        action="store_true",
        help="start without Zipkin and Prometheus (the services still make spans and serve /metrics)",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop every process").set_defaults(func=cmd_down)
    sub.add_parser("status", help="processes, health and Envoy clusters").set_defaults(func=cmd_status)
    logs = sub.add_parser("logs", help="show the logs")
    logs.add_argument("service", nargs="?", help="only this program (e.g. orders, envoy)")
    logs.add_argument("-n", "--lines", type=int, default=30)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)
    swap_cmd = sub.add_parser("swap", help="replace a service's implementation live")
    swap_cmd.add_argument("service", nargs="?", default="")
    swap_cmd.add_argument("impl", nargs="?", default="")
    swap_cmd.set_defaults(func=cmd_swap)
    canary_cmd = sub.add_parser("canary", help="split a service's traffic between two implementations")
    canary_cmd.add_argument("service", nargs="?", default="")
    canary_cmd.add_argument("impl", nargs="?", default="")
    canary_cmd.add_argument("weight", nargs="?", default="")
    canary_cmd.set_defaults(func=cmd_canary)
    sub.add_parser("demo", help="a scripted tour of the running stack").set_defaults(func=cmd_demo)
    sub.add_parser("clean-data", help="delete the databases").set_defaults(func=cmd_clean_data)
    certs = sub.add_parser("certs", help="issue the local CA's certificates and the token key")
    certs.add_argument("--run-dir", help="another run directory than the stack's (tests)")
    certs.add_argument("--if-missing", action="store_true", help="only when some file is missing")
    certs.set_defaults(func=cmd_certs)
    token = sub.add_parser("token", help="print a customer token (JWT) from the local issuer")
    token.add_argument("customer", help="the customer id, the token's subject")
    token.add_argument("--scope", help="a scope to grant, e.g. shop.operator")
    token.set_defaults(func=cmd_token)
    docker = sub.add_parser("render-docker", help="write Envoy's Docker Compose configuration")
    docker.add_argument("out")
    docker.set_defaults(func=cmd_render_docker)
    sub.add_parser(
        "render-examples", help="re-render the committed configuration (envoy/local/, deploy/local/)"
    ).set_defaults(func=cmd_render_examples)
    manifests = sub.add_parser("k8s-manifests", help="write the Kubernetes manifests (deploy/k8s)")
    manifests.add_argument("out")
    manifests.set_defaults(func=cmd_k8s_manifests)
    secrets = sub.add_parser("k8s-secrets", help="copy the certificates deploy/k8s's Secrets are made of")
    secrets.add_argument("out")
    secrets.set_defaults(func=cmd_k8s_secrets)
    ctr = sub.add_parser("containers", help="build, start, stop or test the Docker Compose stack")
    ctr.add_argument("action", choices=["certs", "build", "up", "down", "test"])
    ctr.add_argument(
        "--bases",
        default="auto",
        choices=["auto", "public", "local"],
        help="base images: public ones, locally built ones, or local only when no registry answers",
    )
    ctr.add_argument("pytest_args", nargs="*", help="extra pytest arguments (test)")
    ctr.set_defaults(func=cmd_containers)
    hosts = sub.add_parser("hosts", help="run the suites with every program on a host (network namespace) of its own")
    hosts.add_argument("action", choices=["test"])
    hosts.add_argument("--suite", action="append", help="a suite to run instead of the default ones (repeatable)")
    hosts.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    hosts.set_defaults(func=cmd_hosts)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `hosts test [--suite S] -- <pytest arguments>`: what follows -- is pytest's.
        if args.func is not cmd_hosts or extra[0] != "--":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.pytest_args += extra[1:]
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
