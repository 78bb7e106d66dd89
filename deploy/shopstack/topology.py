"""The stack's topology, read from deploy/stack.toml and the API descriptor set.

Everything that runs the stack (supervisord, Envoy, the tests, the Docker
checks) derives its facts from a Topology, so a port or a route is written
down once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Only the standard library at import time: shopstack.check validates a
# command's arguments with the machine's python3, before anything is built.

ROOT = Path(__file__).resolve().parents[2]
# SHOP_STACK_FILE points the commands at another topology (tests run `up` on
# free ports with one).
STACK_FILE = Path(os.environ.get("SHOP_STACK_FILE", ROOT / "deploy" / "stack.toml"))
DESCRIPTOR_SET = ROOT / "protos" / "gen" / "shop_api.binpb"
# The storefront's bundle, built by `make build` (web/scripts/build.mjs).
WEB_DIST = ROOT / "web" / "dist"
# The topology variant that puts every program on a host of its own (`make test-hosts`).
HOSTS_FILE = ROOT / "deploy" / "hosts.toml"
# Where every program listens and what it dials unless a hosts variant says otherwise.
LOOPBACK = "127.0.0.1"
# The program name of the edge in a hosts variant (the others are cluster names).
EDGE_PROGRAM = "envoy"


@dataclass(frozen=True)
class Method:
    """One RPC of a service, as the protos describe it."""

    service: str  # the full gRPC service name
    name: str
    client_streaming: bool
    server_streaming: bool
    retry_safe: bool
    # idempotency_level NO_SIDE_EFFECTS: a read.
    read_only: bool = False
    # The request message's first string field (None if it has none).
    request_string_field: str | None = None

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


@dataclass(frozen=True)
class Implementation:
    """One way to run a service: its language, default port and command."""

    service: str
    lang: str
    port: int
    metrics_port: int
    command: tuple[str, ...]
    # The files whose content is the code it runs ({root} is the repository).
    code: tuple[str, ...] = ()

    @property
    def metrics_key(self) -> str:
        """The port-override key of its metrics port."""
        return f"{self.cluster}-metrics"

    @property
    def cluster(self) -> str:
        """The Envoy cluster name, also the supervisord program name."""
        return f"{self.service}-{self.lang}"

    def code_digest(self) -> str:
        """A digest of the code this implementation runs (see `code`), to tell
        whether a running process is older than what was just built."""
        digest = hashlib.sha256()
        for entry in self.code:
            top = Path(entry.format(root=ROOT))
            files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
            for path in files:
                if "__pycache__" in path.parts:
                    continue
                digest.update(str(path).encode() + b"\0")
                digest.update(path.read_bytes() if path.exists() else b"(missing)")
        return digest.hexdigest()


@dataclass(frozen=True)
class Service:
    """One service of the shop and how Envoy treats it."""

    name: str
    proto: str
    impl: str
    timeout_seconds: float
    per_try_timeout_seconds: float
    internal_rpcs: tuple[str, ...]
    depends_on: tuple[str, ...]
    implementations: dict[str, Implementation]
    customer_rpcs: tuple[str, ...] = ()

    def is_internal(self, method: str) -> bool:
        return "*" in self.internal_rpcs or method in self.internal_rpcs

    def needs_customer(self, method: str) -> bool:
        return "*" in self.customer_rpcs or method in self.customer_rpcs


@dataclass(frozen=True)
class Security:
    """Identities, certificates and tokens ([security] in stack.toml)."""

    trust_domain: str
    certs_dir: str
    token_issuer: str
    token_audience: str
    token_ttl_seconds: int
    operator_scope: str
    # identity name -> the RPC paths it may call on the internal listener ("*": all).
    internal_access: dict[str, tuple[str, ...]]

    def spiffe_id(self, name: str) -> str:
        return f"spiffe://{self.trust_domain}/{name}"


@dataclass(frozen=True)
class ListenerLimits:
    """What one Envoy listener's traffic may hold of each service ([limits.<listener>] in stack.toml)."""

    max_requests_per_cluster: int
    max_pending_requests_per_cluster: int
    max_connections_per_cluster: int
    max_concurrent_streams_per_connection: int
    # Only the public listener is rate limited (0: no limit).
    requests_per_second: int = 0
    burst: int = 0


@dataclass(frozen=True)
class Limits:
    """Envoy's limits, each explained where stack.toml sets it."""

    public: ListenerLimits
    internal: ListenerLimits
    max_downstream_connections: int
    max_heap_bytes: int
    # Server streams one client may hold open on one service process ([limits.services]).
    max_streams_per_client: int


@dataclass(frozen=True)
class Telemetry:
    """Where traces and metrics go: the Zipkin and Prometheus servers."""

    zipkin_port: int
    prometheus_port: int
    scrape_interval_seconds: float
    sampling_ratio: float


@dataclass(frozen=True)
class Topology:
    """The whole stack: edge ports and services, with the ports actually used."""

    public_port: int
    internal_port: int
    admin_port: int
    services: dict[str, Service]
    limits: Limits
    telemetry: Telemetry
    security: Security
    # Browser origins allowed to call the public listener (CORS).
    cors_origins: tuple[str, ...] = ()
    # Port overrides per cluster name (tests run on free ports).
    ports: dict[str, int] = field(default_factory=dict)
    # A hosts variant (deploy/hosts.toml, with_hosts): per program ("envoy",
    # or an implementation's cluster name), the address of each of its hosts,
    # one per replica. Empty: everything on loopback, as `make up` runs it.
    hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def identities(self) -> dict[str, tuple[str, ...]]:
        """Every identity that gets a certificate, with the names it is reached
        by: in Docker Compose a service's cluster names and envoy, and in a
        hosts variant the addresses of its hosts too."""
        names: dict[str, tuple[str, ...]] = {
            name: tuple(impl.cluster for impl in svc.implementations.values())
            + tuple(a for impl in svc.implementations.values() for a in self.hosts.get(impl.cluster, ()))
            for name, svc in self.services.items()
        }
        names[EDGE_PROGRAM] = (EDGE_PROGRAM, *self.hosts.get(EDGE_PROGRAM, ()))
        names["operator"] = ()
        return names

    def addresses_of(self, program: str) -> tuple[str, ...]:
        """The address of each host a program runs on (loopback without a hosts variant)."""
        return self.hosts.get(program, (LOOPBACK,))

    def host_of(self, program: str) -> str:
        """The address of a program's (first) host."""
        return self.addresses_of(program)[0]

    def replicas(self, impl: Implementation) -> list[tuple[str, str]]:
        """(program name, host address) of each replica of an implementation:
        the first is named after its cluster, the others <cluster>-2, -3, ..."""
        return [
            (impl.cluster if n == 0 else f"{impl.cluster}-{n + 1}", address)
            for n, address in enumerate(self.addresses_of(impl.cluster))
        ]

    def with_hosts(self, hosts: Mapping[str, tuple[str, ...]]) -> Topology:
        """The same topology with programs on other hosts (deploy/hosts.toml)."""
        return replace(self, hosts={program: tuple(addresses) for program, addresses in hosts.items()})

    def port_of(self, impl: Implementation) -> int:
        return self.ports.get(impl.cluster, impl.port)

    def metrics_port_of(self, impl: Implementation) -> int:
        return self.ports.get(impl.metrics_key, impl.metrics_port)

    def impl_of(self, service: str, lang: str | None = None) -> Implementation:
        svc = self.services[service]
        return svc.implementations[lang or svc.impl]

    def with_ports(
        self,
        public: int,
        internal: int,
        admin: int,
        ports: dict[str, int],
        telemetry: tuple[int, int] | None = None,
    ) -> Topology:
        """The same topology on other ports; telemetry is (zipkin, prometheus)."""
        tel = self.telemetry
        if telemetry is not None:
            tel = replace(tel, zipkin_port=telemetry[0], prometheus_port=telemetry[1])
        return replace(
            self,
            public_port=public,
            internal_port=internal,
            admin_port=admin,
            ports=dict(ports),
            telemetry=tel,
        )

    def with_impl(self, service: str, lang: str) -> Topology:
        svc = self.services[service]
        if lang not in svc.implementations:
            known = ", ".join(sorted(svc.implementations))
            raise ValueError(f"{service} has no {lang!r} implementation (known: {known})")
        services = dict(self.services)
        services[service] = replace(svc, impl=lang)
        return replace(self, services=services)

    def all_ports(self) -> dict[str, int]:
        """Every port the default stack listens on, by what listens there."""
        ports = {
            "envoy public listener": self.public_port,
            "envoy internal listener": self.internal_port,
            "envoy admin": self.admin_port,
        }
        for svc in self.services.values():
            impl = svc.implementations[svc.impl]
            ports[impl.cluster] = self.port_of(impl)
            ports[f"{impl.cluster} metrics"] = self.metrics_port_of(impl)
        return ports

    def telemetry_ports(self) -> dict[str, int]:
        """The ports of the tracing and metrics servers (started only with telemetry on)."""
        return {"zipkin": self.telemetry.zipkin_port, "prometheus": self.telemetry.prometheus_port}


def load(path: Path | None = None) -> Topology:
    """Read stack.toml (or SHOP_STACK_FILE) into a Topology."""
    path = path or STACK_FILE
    raw = tomllib.loads(path.read_text())
    impls = raw.get("implementations", {})
    services = {}
    for name, spec in raw["services"].items():
        variants = {
            lang: Implementation(
                service=name,
                lang=lang,
                port=int(v["port"]),
                metrics_port=int(v["metrics_port"]),
                command=tuple(v["command"]),
                code=tuple(v.get("code", ())),
            )
            for lang, v in impls.get(name, {}).items()
        }
        if spec["impl"] not in variants:
            raise ValueError(f"{path}: services.{name}.impl = {spec['impl']!r} has no implementations.{name} entry")
        services[name] = Service(
            name=name,
            proto=spec["proto"],
            impl=spec["impl"],
            timeout_seconds=float(spec["timeout_seconds"]),
            per_try_timeout_seconds=float(spec["per_try_timeout_seconds"]),
            internal_rpcs=tuple(spec.get("internal_rpcs", ())),
            depends_on=tuple(spec.get("depends_on", ())),
            implementations=variants,
            customer_rpcs=tuple(spec.get("customer_rpcs", ())),
        )
    edge = raw["edge"]
    limits = raw["limits"]
    tel = raw["telemetry"]
    ratio = float(tel["sampling_ratio"])
    if not 0 <= ratio <= 1:
        raise ValueError(f"{path}: telemetry.sampling_ratio = {ratio} must be between 0 and 1")
    sec = raw["security"]
    security = Security(
        trust_domain=sec["trust_domain"],
        certs_dir=sec["certs_dir"],
        token_issuer=sec["token_issuer"],
        token_audience=sec["token_audience"],
        token_ttl_seconds=int(sec["token_ttl_seconds"]),
        operator_scope=sec["operator_scope"],
        internal_access={name: tuple(rpcs) for name, rpcs in sec["internal_access"].items()},
    )
    return Topology(
        public_port=int(edge["public_port"]),
        internal_port=int(edge["internal_port"]),
        admin_port=int(edge["admin_port"]),
        services=services,
        limits=Limits(
            public=ListenerLimits(**limits["public"]),
            internal=ListenerLimits(**limits["internal"]),
            max_downstream_connections=int(limits["edge"]["max_downstream_connections"]),
            max_heap_bytes=int(limits["edge"]["max_heap_bytes"]),
            max_streams_per_client=int(limits["services"]["max_streams_per_client"]),
        ),
        telemetry=Telemetry(
            zipkin_port=int(tel["zipkin_port"]),
            prometheus_port=int(tel["prometheus_port"]),
            scrape_interval_seconds=float(tel["scrape_interval_seconds"]),
            sampling_ratio=ratio,
        ),
        cors_origins=tuple(edge.get("cors_origins", ())),
        security=security,
    )


@dataclass(frozen=True)
class Hosts:
    """A hosts variant of the topology (deploy/hosts.toml): the addresses only."""

    subnet: str
    # Where the callers (the test suites) run.
    client: str
    # Per program, the address of each of its hosts (Topology.hosts).
    addresses: dict[str, tuple[str, ...]]

    @property
    def prefix_length(self) -> int:
        return int(self.subnet.rpartition("/")[2])


def load_hosts(topology: Topology, path: Path = HOSTS_FILE, stack_file: Path | None = None) -> Hosts:
    """Read a hosts variant and check it against the topology: every program
    named exists, every address is in the subnet and used once, every program
    that runs by default has a host, and only stateless services have replicas."""
    raw = tomllib.loads(path.read_text())
    network = raw.get("network", {})
    try:
        subnet = ipaddress.ip_network(network["subnet"])
        client = ipaddress.ip_address(network["client"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: [network] needs a valid subnet and client address ({err})") from err
    clusters = {impl.cluster: svc for svc in topology.services.values() for impl in svc.implementations.values()}
    stateless = tomllib.loads((stack_file or STACK_FILE).read_text()).get("kubernetes", {}).get("stateless", [])
    addresses: dict[str, tuple[str, ...]] = {}
    seen = {str(client): "client"}
    for program, value in raw.get("addresses", {}).items():
        if program != EDGE_PROGRAM and program not in clusters:
            known = ", ".join(sorted([EDGE_PROGRAM, *clusters]))
            raise ValueError(f"{path}: {program!r} is not a program of the stack (known: {known})")
        listed = (value,) if isinstance(value, str) else tuple(value)
        if not listed:
            raise ValueError(f"{path}: {program} has no address")
        if len(listed) > 1 and (program == EDGE_PROGRAM or clusters[program].name not in stateless):
            raise ValueError(
                f"{path}: {program} has {len(listed)} hosts, but only the stateless services "
                f"({', '.join(stateless)}, stack.toml [kubernetes]) may run replicas"
            )
        for address in listed:
            if ipaddress.ip_address(address) not in subnet:
                raise ValueError(f"{path}: {program}'s address {address} is not in {subnet}")
            if address in seen:
                raise ValueError(f"{path}: {address} is both {seen[address]}'s and {program}'s")
            seen[address] = program
        addresses[program] = listed
    defaults = [EDGE_PROGRAM] + [svc.implementations[svc.impl].cluster for svc in topology.services.values()]
    missing = [program for program in defaults if program not in addresses]
    if missing:
        raise ValueError(f"{path}: no address for {', '.join(missing)}")
    return Hosts(subnet=str(subnet), client=str(client), addresses=addresses)


def methods(descriptor_set: Path = DESCRIPTOR_SET) -> dict[str, list[Method]]:
    """Every shop RPC by full service name, from the descriptor set."""
    from google.protobuf import descriptor_pb2

    # MethodOptions.IdempotencyLevel values that make a retry safe.
    safe_to_retry = {
        descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
        descriptor_pb2.MethodOptions.IDEMPOTENT,
    }
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{descriptor_set} is missing; run `make protos`") from exc
    messages = {f"{file.package}.{message.name}": message for file in files.file for message in file.message_type}
    found: dict[str, list[Method]] = {}
    for file in files.file:
        if not file.package.startswith("shop."):
            continue
        for service in file.service:
            full = f"{file.package}.{service.name}"
            found[full] = [
                Method(
                    service=full,
                    name=m.name,
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                    retry_safe=m.options.idempotency_level in safe_to_retry,
                    read_only=m.options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
                    request_string_field=_first_string_field(messages.get(m.input_type.lstrip(".")), messages),
                )
                for m in service.method
            ]
    return found


def _first_string_field(message: Any, messages: Mapping[str, Any] | None = None, depth: int = 2) -> str | None:
    """The path of a request message's first string field (a DescriptorProto), if it has one.

    A message with no string field of its own (PriceCartRequest: repeated
    lines) is searched one message level down (`items.product_id`).
    """
    from google.protobuf import descriptor_pb2

    if message is None:
        return None
    for field_ in message.field:
        if field_.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            return str(field_.name)
    if messages is None or depth <= 1:
        return None
    for field_ in message.field:
        if field_.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
            inner = _first_string_field(messages.get(field_.type_name.lstrip(".")), messages, depth - 1)
            if inner:
                return f"{field_.name}.{inner}"
    return None


def dump_ports(topology: Topology) -> str:
    """The ports in use, as JSON (for `make status` and the tests)."""
    return json.dumps(topology.all_ports(), indent=2)
