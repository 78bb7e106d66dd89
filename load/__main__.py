"""`python -m load`: start Locust on load/locustfile.py against the local edge (`make load` calls this).

It fills in what Locust needs and the shop decides: the target (Envoy's public
listener from deploy/stack.toml, loopback only unless allowed), the stack
whose CA and token issuer to use (SHOP_RUN_DIR or .run), the web UI on
127.0.0.1 (port 8089 if free, else any free port; the URL is printed), a run
that starts at once and stops by itself after --duration, and stdin detached
(Locust's keyboard controls would stop a `make load &` in the background).
Flags it does not know are passed to Locust unchanged: the traffic flags of
load/plan.py, `--json-file`, `--csv`, `--html`, ...
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from shopstack.stack import free_port, port_holder

from load.client import Target, TargetError, default_target, local_stack
from load.plan import DEFAULTS, HELP, flag

HERE = Path(__file__).resolve().parent
LOCUST = Path(sys.executable).parent / "locust"
LOCUST_WEB_PORT = 8089  # Locust's usual port, used when it is free
STOP_TIMEOUT_SECONDS = 5  # at the end, a user may finish the journey it is in for this long


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="traffic flags (passed to Locust; load/README.md):\n"
        + "\n".join(f"  {flag(name)} (default {default})\n      {HELP[name]}" for name, default in DEFAULTS.items()),
    )
    parser.add_argument("--host", help="HOST:PORT of the edge (default: 127.0.0.1:<public_port of deploy/stack.toml>)")
    parser.add_argument("--users", type=int, default=20, help="concurrent customers (default 20)")
    parser.add_argument("--spawn-rate", type=float, default=5, help="customers started per second (default 5)")
    parser.add_argument("--duration", default="10m", help="how long the load runs, e.g. 60s, 10m (default 10m)")
    parser.add_argument("--headless", action="store_true", help="no web UI; Locust prints its summary at the end")
    parser.add_argument("--web-port", type=int, help=f"the web UI's port (default {LOCUST_WEB_PORT}, or any free one)")
    parser.add_argument(
        "--autoquit", type=int, default=60, help="seconds the web UI stays up after the run, to read it (default 60)"
    )
    parser.add_argument("--allow-remote-target", action="store_true", help="allow a --host that is not loopback")
    parser.add_argument(
        "--run-dir",
        help="the run directory of the stack to load, for its CA and token issuer (default: SHOP_RUN_DIR or .run)",
    )
    return parser.parse_known_args(argv)


def web_port(asked: int | None) -> int:
    if asked is not None:
        holder = port_holder(asked)
        if holder is not None:
            raise SystemExit(f"load: port {asked} for the web UI is taken by {holder}; pick another WEB_PORT")
        return asked
    return LOCUST_WEB_PORT if port_holder(LOCUST_WEB_PORT) is None else free_port()


def reachable(target: Target) -> bool:
    try:
        with socket.create_connection((target.host, target.port), timeout=2):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    args, passthrough = parse(argv)
    if args.run_dir:
        os.environ["SHOP_RUN_DIR"] = str(Path(args.run_dir).resolve())  # for the locustfile too
    try:
        target = Target.parse(args.host) if args.host else default_target()
        target.check_local(allow_remote=args.allow_remote_target)
        local_stack()
    except TargetError as err:
        raise SystemExit(f"load: {err}") from None
    if not reachable(target):
        raise SystemExit(f"load: nothing answers at {target.address}; start the shop first (make up)")
    if args.users < 1 or args.spawn_rate <= 0:
        raise SystemExit("load: --users must be at least 1 and --spawn-rate above 0")
    command = [
        str(LOCUST),
        "--locustfile",
        str(HERE / "locustfile.py"),
        "--host",
        target.address,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.duration,
        "--stop-timeout",
        str(STOP_TIMEOUT_SECONDS),
    ]
    if args.allow_remote_target:
        command.append("--allow-remote-target")
    what = f"{args.users} customers against {target.address} for {args.duration}"
    if args.headless:
        command.append("--headless")
        print(f"load: {what}, no web UI; Locust prints its summary when the run ends", flush=True)
    else:
        port = web_port(args.web_port)
        command += ["--web-host", "127.0.0.1", "--web-port", str(port), "--autostart"]
        command += ["--autoquit", str(args.autoquit)]
        print(
            f"load: {what}\n"
            f"load: Locust's web UI: http://127.0.0.1:{port}/ (it closes {args.autoquit} s after the run ends)",
            flush=True,
        )
    command += passthrough  # last, so that they win over the defaults above
    with open(os.devnull) as devnull:
        os.dup2(devnull.fileno(), sys.stdin.fileno())
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
