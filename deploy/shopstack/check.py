"""Check an operator command's arguments before anything is built.

The Makefile runs this with the machine's python3 first thing in `make up`,
`make swap` and `make canary`, so a misspelt name fails at once with the
valid ones listed instead of after a rebuild; the commands themselves
(shopstack/__main__.py) run the same checks. Only the standard library is
used: on a fresh clone nothing else is installed yet.

    python3 -m shopstack.check up INVENTORY
    python3 -m shopstack.check swap SERVICE IMPL
    python3 -m shopstack.check canary SERVICE IMPL WEIGHT
"""

from __future__ import annotations

import sys

from shopstack.topology import Topology, load


class UsageError(ValueError):
    """A command's argument is wrong; the message names the valid values."""


def _listing(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def swappable(topology: Topology) -> dict[str, list[str]]:
    """The services with more than one implementation, and those implementations."""
    return {
        name: list(service.implementations)
        for name, service in topology.services.items()
        if len(service.implementations) > 1
    }


def check_impl(topology: Topology, service: str, impl: str, command: str) -> None:
    """SERVICE and IMPL name a service that has more than one implementation and one of them."""
    choices = swappable(topology)
    how = "; ".join(f"SERVICE={name} IMPL={'|'.join(impls)}" for name, impls in choices.items())
    if not service:
        raise UsageError(f"SERVICE is missing: make {command} {how}")
    if service not in topology.services:
        raise UsageError(
            f"there is no service {service!r}; the services are {_listing(sorted(topology.services))}, "
            f"and the ones with more than one implementation: {how}"
        )
    impls = list(topology.services[service].implementations)
    if service not in choices:
        raise UsageError(
            f"{service} has only one implementation ({impls[0]}), so there is nothing to {command} it to; "
            f"what can be swapped: {how}"
        )
    if not impl:
        raise UsageError(f"IMPL is missing: make {command} SERVICE={service} IMPL={'|'.join(impls)}")
    if impl not in impls:
        raise UsageError(f"{service} has no {impl!r} implementation; IMPL must be {_listing(impls)}")


def check_weight(weight: str) -> int:
    try:
        value = int(weight)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise UsageError(f"WEIGHT must be a whole percentage from 0 to 100, got {weight!r} (e.g. WEIGHT=10)")
    return value


def check_up(topology: Topology, inventory: str) -> None:
    impls = list(topology.services["inventory"].implementations)
    if inventory and inventory not in impls:
        raise UsageError(f"inventory has no {inventory!r} implementation; INVENTORY must be {_listing(impls)}")


def main(argv: list[str]) -> int:
    topology = load()
    command, *args = argv
    try:
        if command == "up":
            check_up(topology, *(args or [""]))
        elif command in ("swap", "canary"):
            service, impl, *rest = [*args, "", ""]
            check_impl(topology, service, impl, command)
            if command == "canary":
                check_weight(rest[0])
        else:
            raise UsageError(f"unknown command {command!r}")
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
