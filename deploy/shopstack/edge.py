"""A running shop known only by its edge: Envoy's addresses, its admin, and how to read logs.

The local stack (shopstack.stack.Stack) knows much more, because it runs the
processes. A shop in containers, started by Docker Compose or podman, is
reached the same way through Envoy; the cross-language suites take an Edge
with `--edge FILE` (a JSON file written by `python -m shopstack containers
test`) to run against it.

Envoy's listeners there speak TLS only, as in `make up`: an Edge knows the
certificates directory of the CA that signed them (`make certs`), and opens
channels and issues customer tokens exactly as shopstack.stack.Stack does
(shopstack.channels, shopstack.tokens).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from shopstack import channels, envoy, pki, tokens, topology


def set_runtime(admin_url: str, **values: str | int) -> None:
    """Change Envoy runtime values (e.g. the fault filters) through the admin interface."""
    query = "&".join(f"{k.replace('__', '.')}={v}" for k, v in values.items())
    request = urllib.request.Request(f"{admin_url}/runtime_modify?{query}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        resp.read()


def envoy_stats(admin_url: str, prefix: str = "") -> dict[str, int]:
    """Envoy's counters and gauges, optionally only those starting with prefix."""
    with urllib.request.urlopen(f"{admin_url}/stats?format=json", timeout=5) as resp:
        data = json.load(resp)
    stats = {}
    for stat in data.get("stats", []):
        if "value" in stat and stat["name"].startswith(prefix):
            stats[stat["name"]] = int(stat["value"])
    return stats


@dataclass
class Edge:
    public_addr: str
    internal_addr: str
    admin_addr: str
    # The CA, the operator's certificate and the token key (`make certs`).
    certs_dir: Path
    # Per program (envoy, catalog-go, ...), the command that prints its log.
    log_commands: dict[str, list[str]] = field(default_factory=dict)
    # Per service, the implementations receiving traffic and their weights,
    # as for a Stack (a compose project runs stack.toml's defaults).
    routing: dict[str, dict[str, int]] = field(default_factory=lambda: envoy.default_routing(topology.load()))
    _logs_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="shop-edge-logs-")))

    @classmethod
    def load(cls, path: Path) -> Edge:
        raw = json.loads(path.read_text())
        if not raw.get("certs"):
            raise ValueError(f'{path} names no certificates directory ("certs"): the edge speaks TLS only')
        edge = cls(raw["public"], raw["internal"], raw["admin"], Path(raw["certs"]), raw.get("logs", {}))
        if raw.get("routing"):
            edge.routing = {name: dict(weights) for name, weights in raw["routing"].items()}
        return edge

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "public": self.public_addr,
                    "internal": self.internal_addr,
                    "admin": self.admin_addr,
                    "certs": str(self.certs_dir),
                    "logs": self.log_commands,
                    "routing": self.routing,
                },
                indent=2,
            )
        )

    @property
    def certs(self) -> pki.Certs:
        return pki.Certs(self.certs_dir, topology.load().security.trust_domain)

    def token(self, customer: str, scopes: Iterable[str] = ()) -> str:
        """A customer token from the local issuer whose JWKS this Envoy trusts."""
        return tokens.issue(self.certs, topology.load().security, customer, scopes=scopes)

    def operator_token(self, subject: str = "operator") -> str:
        return self.token(subject, scopes=[topology.load().security.operator_scope])

    def channel(
        self, address: str, identity: str | None = pki.OPERATOR, options: channels.ChannelOptions = ()
    ) -> grpc.Channel:
        """TLS trusting the CA, presenting identity's certificate (None: none)."""
        return channels.channel(self.certs, address, identity, options)

    def public_channel(self, options: channels.ChannelOptions = ()) -> grpc.Channel:
        """The public listener, as a customer reaches it: TLS, no client certificate."""
        return self.channel(self.public_addr, None, options)

    def internal_channel(self, identity: str = pki.OPERATOR, options: channels.ChannelOptions = ()) -> grpc.Channel:
        """The internal listener, with identity's certificate (mutual TLS)."""
        return self.channel(self.internal_addr, identity, options)

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_addr}"

    def set_runtime(self, **values: str | int) -> None:
        set_runtime(self.admin_url, **values)

    def envoy_stats(self, prefix: str = "") -> dict[str, int]:
        return envoy_stats(self.admin_url, prefix)

    def log_of(self, program: str) -> Path:
        """The program's log so far, fetched now into a file (as the local stack keeps it)."""
        path = self._logs_dir / f"{program}.log"
        command = self.log_commands.get(program)
        if command is None:
            raise KeyError(f"no log command for {program} (known: {', '.join(sorted(self.log_commands))})")
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        path.write_text(result.stdout + result.stderr)
        return path
