"""Several hosts on one machine: a hosts variant's network in Linux network namespaces.

`make test-hosts` (`python -m shopstack hosts test`) builds, from
deploy/hosts.toml:

- one network namespace per host address (Envoy, each replica of each
  implementation) and one for the client, where the test suites run;
- one more holding a bridge, br0, the hosts' switch;
- per host a veth pair: eth0 with the host's address in the host's namespace,
  its peer a port of br0 in the bridge's namespace. Nothing is created in the
  machine's own namespace, so its network is never touched.

Inside a host's namespace the loopback interface stays down: a program that
dialled or bound 127.0.0.1 there would fail, so a passing run shows that
nothing assumes loopback. The client's loopback is up (pytest is not the shop).

Cutting a host's link (`Network.cut`) sets its bridge port down, as if its
cable were pulled at the switch: the host and its processes keep running,
and nobody can reach them or be reached by them. `Network.restore` plugs it
back.

Every name starts with shop<pid>- (the pid of the process that made them),
and everything is removed at the end, on failure too; a run that was killed
outright leaves namespaces behind, which the next run removes (their pid is
gone). Needs root and iproute2 (`ip`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from shopstack import topology
from shopstack.topology import ROOT, Hosts, Topology

PREFIX = "shop"
BRIDGE = "br0"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")
# The suites run across hosts, and how long they may take in all.
SUITES = ("tests/contract", "tests/e2e", "tests/swap", "tests/hosts")
# test_settings starts its own processes on loopback: nothing to do with hosts.
IGNORED = ("tests/contract/test_settings.py",)
VENV_BIN = ROOT / ".venv" / "bin"


class NetnsError(RuntimeError):
    """Something the caller can act on; the message says what."""


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _empty(namespace: str) -> None:
    """Kill what still runs in a namespace (by pid), so that deleting it frees it."""
    for pid in ip("netns", "pids", namespace, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete(namespace: str) -> None:
    _empty(namespace)
    ip("netns", "delete", namespace, check=False)


def namespaces() -> list[str]:
    """The names of the machine's network namespaces (`ip netns list`)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def remove_stale() -> list[str]:
    """Remove the namespaces of runs whose process is gone; returns their names."""
    stale = [name for name in namespaces() if (m := _NAME.match(name)) and not _alive(int(m.group(1)))]
    for name in stale:
        _delete(name)
    return stale


@dataclass
class Network:
    """The namespaces of one run: per host address, its namespace and its bridge port."""

    bridge: str  # the namespace holding br0
    # address -> (namespace, name of its port on br0)
    hosts: dict[str, tuple[str, str]]
    client: str  # the client's address
    prefix_length: int

    @classmethod
    def plan(cls, topo: Topology, variant: Hosts, run: str | None = None) -> Network:
        """Names for every host of the variant (nothing is created yet)."""
        run = run or f"{PREFIX}{os.getpid()}"
        placed = topo.with_hosts(variant.addresses)
        programs: dict[str, str] = {variant.client: "client"}
        programs[placed.host_of(topology.EDGE_PROGRAM)] = topology.EDGE_PROGRAM
        for svc in placed.services.values():
            for impl in svc.implementations.values():
                if impl.cluster in variant.addresses:
                    programs.update({host: name for name, host in placed.replicas(impl)})
        hosts = {address: (f"{run}-{name}", f"h{n}") for n, (address, name) in enumerate(programs.items())}
        return cls(f"{run}-net", hosts, variant.client, variant.prefix_length)

    @property
    def namespaces(self) -> dict[str, str]:
        """address -> namespace, for Stack.netns."""
        return {address: namespace for address, (namespace, _) in self.hosts.items()}

    @property
    def client_namespace(self) -> str:
        return self.hosts[self.client][0]

    def create(self) -> None:
        """Make the namespaces, the bridge and the links, and bring them up."""
        ip("netns", "add", self.bridge)
        ip("-n", self.bridge, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.bridge, "link", "set", BRIDGE, "up")
        for address, (namespace, port) in self.hosts.items():
            ip("netns", "add", namespace)
            ip("-n", self.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("-n", self.bridge, "link", "set", port, "master", BRIDGE, "up")
            ip("-n", namespace, "addr", "add", f"{address}/{self.prefix_length}", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            if address == self.client:
                ip("-n", namespace, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Kill whatever still runs in the namespaces and delete them (the links go with them)."""
        for namespace, _ in self.hosts.values():
            _delete(namespace)
        _delete(self.bridge)

    def cut(self, address: str) -> None:
        """Pull a host's cable: its port on the bridge goes down."""
        ip("-n", self.bridge, "link", "set", self.hosts[address][1], "down")

    def restore(self, address: str) -> None:
        ip("-n", self.bridge, "link", "set", self.hosts[address][1], "up")

    def run_in(self, address: str, *command: str) -> str:
        """Run a command on a host (in its namespace) and return its output."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.hosts[address][0], *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise NetnsError(f"{' '.join(command)} on {address} failed: {result.stderr.strip()}")
        return result.stdout

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "bridge": self.bridge,
                    "hosts": {a: list(v) for a, v in self.hosts.items()},
                    "client": self.client,
                    "prefix_length": self.prefix_length,
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, path: Path) -> Network:
        raw = json.loads(path.read_text())
        hosts = {address: (ns, port) for address, (ns, port) in raw["hosts"].items()}
        return cls(raw["bridge"], hosts, raw["client"], int(raw["prefix_length"]))


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def test(pytest_args: list[str], suites: list[str] | None = None) -> int:
    """Build the hosts, run the suites (default SUITES) from the client's host, remove everything."""
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root: run `make test-hosts` as root")
    stale = remove_stale()
    if stale:
        print(f"removed {len(stale)} namespaces a killed run left behind: {', '.join(stale)}")
    topo = topology.load()
    network = Network.plan(topo, topology.load_hosts(topo))
    description = ROOT / ".tmp" / f"{network.bridge}.json"
    # make's SIGTERM (or a CI timeout) must still remove the namespaces.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        network.create()
        description.parent.mkdir(parents=True, exist_ok=True)
        network.dump(description)
        print(f"{len(network.hosts)} hosts on {BRIDGE} in {network.bridge}; the suites run on {network.client}")
        command = [
            "ip",
            "netns",
            "exec",
            network.client_namespace,
            str(VENV_BIN / "pytest"),
            "-q",
            *(suites or SUITES),
            *(f"--ignore={path}" for path in IGNORED),
            f"--hosts={description}",
            *pytest_args,
        ]
        sys.stdout.flush()
        child = subprocess.Popen(command, cwd=ROOT)
        try:
            return child.wait()
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
    finally:
        network.remove()
        description.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)
        left = [name for name in namespaces() if name.startswith(f"{network.bridge.rsplit('-', 1)[0]}-")]
        if left:
            print(f"error: namespaces left behind: {', '.join(left)}", file=sys.stderr)
