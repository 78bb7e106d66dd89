"""The floors: bare servers in each language and a bare Envoy hop, measured beside the shop.

What a language's gRPC library itself costs per request on this machine is
the floor under every service written in it; a service's figure only means
something against it. So `make bench` starts, beside the stack:

- one bare server per language (bench/floor/{go,node,python}): grpc.health.v1
  Check and nothing else, no interceptors, no logging, no telemetry, on the
  same pinned gRPC library as the services (go_service/go.mod,
  node_service/package-lock.json, the .venv's grpcio) and with the same
  mutual TLS (a service certificate; a client certificate from the CA
  required);
- a bare Envoy (the same pinned binary, flags and worker count as the stack's):
  two listeners with the stack's TLS, one like the public listener (server
  TLS, the edge certificate) and one like the internal one (mutual TLS), each
  a router and nothing else in front of the Go floor, over the same upstream
  mutual TLS and HTTP/2 the stack's clusters use. No access log, no tracing,
  no health checks.

The bench measures them as it measures the services (bench/run.py's unary
and hop scenarios, in the same interleaved rounds); the report divides each
service's CPU per request by its language's floor and Envoy's by the bare hop's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shopstack import pki
from shopstack.stack import VENV_BIN, Stack, free_port
from shopstack.topology import ROOT

from bench.errors import BenchError

FLOOR_DIR = ROOT / "bench" / "floor"
GO_BINARY = ROOT / ".tmp" / "bin" / "floor-go"
LANGS = ("go", "node", "python")
# The certificate the floors serve with: a service identity, as a service's port has.
IDENTITY = "catalog"
HEALTH_CHECK = "grpc.health.v1.Health.Check"
ENVOY_PROGRAM = "envoy-bare"


def program(lang: str) -> str:
    return f"floor-{lang}"


@dataclass
class Process:
    program: str
    address: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def _wait_listening(proc: subprocess.Popen[bytes], log: Path, name: str, timeout: float = 60) -> str:
    """The address a floor server printed ("listening HOST:PORT"), once it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"^listening (\S+)$", log.read_text(errors="replace"), re.MULTILINE)
        if match:
            return match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise BenchError(f"{name} did not start; its output ({log}):\n{log.read_text(errors='replace')[-2000:]}")


class Floors:
    """The floor servers and the bare Envoy, started and stopped by pid."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.dir = stack.run_dir / "floor"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.servers: dict[str, Process] = {}
        self.envoy: Process | None = None
        self.envoy_public = ""
        self.envoy_internal = ""

    def _spawn(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
            )
        return proc, log

    @property
    def protoset(self) -> Path:
        """grpc.health.v1 as a descriptor set for ghz (the shop's does not hold it), from grpcio-health-checking."""
        path = self.dir / "health.binpb"
        if not path.is_file():
            file = descriptor_pb2.FileDescriptorProto()
            health_pb2.DESCRIPTOR.CopyToProto(file)
            path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
        return path

    def start(self) -> None:
        pair = self.stack.certs.pair(IDENTITY)
        ca = self.stack.certs.ca
        files = [str(pair.cert), str(pair.key), str(ca)]
        commands = {
            "go": [
                str(GO_BINARY),
                "-listen-addr=127.0.0.1:0",
                f"-tls-cert-file={pair.cert}",
                f"-tls-key-file={pair.key}",
                f"-tls-ca-file={ca}",
            ],
            "node": ["node", str(FLOOR_DIR / "node" / "floor.mjs"), "127.0.0.1:0", *files],
            "python": [str(VENV_BIN / "python"), str(FLOOR_DIR / "python" / "floor.py"), "127.0.0.1:0", *files],
        }
        if not GO_BINARY.is_file():
            raise BenchError(f"the Go floor is not built at {GO_BINARY}; `make bench` builds it")
        for lang, command in commands.items():
            proc, log = self._spawn(program(lang), command)
            self.servers[lang] = Process(program(lang), "", proc)
            self.servers[lang].address = _wait_listening(proc, log, program(lang))
        for lang in LANGS:
            self._check(self.servers[lang].address, pki.OPERATOR, program(lang))
        self._start_envoy()

    def _start_envoy(self) -> None:
        public, internal = free_port(), free_port()
        config = self.dir / "envoy-bare.yaml"
        config.write_text(yaml.safe_dump(bare_envoy(self.stack, public, internal, self.servers["go"].address)))
        proc, log = self._spawn(
            ENVOY_PROGRAM,
            [
                str(VENV_BIN / "envoy"),
                "-c",
                str(config),
                # As shopstack runs the stack's Envoy (deploy/shopstack/stack.py).
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--concurrency",
                "2",
            ],
        )
        self.envoy = Process(ENVOY_PROGRAM, "", proc)
        self.envoy_public = f"127.0.0.1:{public}"
        self.envoy_internal = f"127.0.0.1:{internal}"
        deadline = time.monotonic() + 60
        while True:
            try:
                self._check(self.envoy_public, None, ENVOY_PROGRAM)
                self._check(self.envoy_internal, pki.OPERATOR, ENVOY_PROGRAM)
                return
            except BenchError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(
                        f"the bare Envoy did not start; its output ({log}):\n{log.read_text(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.2)

    def _check(self, address: str, identity: str | None, name: str) -> None:
        """One health Check over TLS (as the operator when identity is set)."""
        certs = self.stack.certs
        key = cert = None
        if identity is not None:
            pair = certs.pair(identity)
            key, cert = pair.key.read_bytes(), pair.cert.read_bytes()
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), key, cert)
        try:
            with grpc.secure_channel(address, creds) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as err:
            raise BenchError(f"{name} at {address}: health Check failed: {err.code().name} {err.details()}") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise BenchError(f"{name} at {address} is not SERVING")

    def addresses(self) -> dict[str, str]:
        found = {p.program: p.address for p in self.servers.values()}
        if self.envoy is not None:
            found[f"{ENVOY_PROGRAM} public"] = self.envoy_public
            found[f"{ENVOY_PROGRAM} internal"] = self.envoy_internal
        return found

    def pids(self) -> dict[str, int]:
        found = {p.program: p.pid for p in self.servers.values()}
        if self.envoy is not None:
            found[self.envoy.program] = self.envoy.pid
        return found

    def stop(self) -> None:
        running = [*self.servers.values(), *([self.envoy] if self.envoy else [])]
        for proc in running:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()


def bare_envoy(stack: Stack, public_port: int, internal_port: int, upstream: str) -> dict[str, Any]:
    """A router-only Envoy: the stack's two kinds of listener TLS in front of one floor server."""
    certs = stack.certs
    topology = stack.topology

    def cert(name: str) -> dict[str, Any]:
        pair = certs.pair(name)
        return {"certificate_chain": {"filename": str(pair.cert)}, "private_key": {"filename": str(pair.key)}}

    def listener(name: str, port: int, server_cert: str, alpn: list[str], mutual: bool) -> dict[str, Any]:
        tls: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [cert(server_cert)],
                "alpn_protocols": alpn,
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            },
        }
        if mutual:
            tls["require_client_certificate"] = True
            tls["common_tls_context"]["validation_context"] = {"trusted_ca": {"filename": str(certs.ca)}}
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "codec_type": "AUTO",
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "floor",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "floor-go"}}],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }
            ],
        }
        return {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                }
            ],
        }

    host, port = upstream.rsplit(":", 1)
    cluster = {
        "name": "floor-go",
        "type": "STATIC",
        "connect_timeout": "1s",
        # The stack's clusters' upstream TLS and HTTP/2 (deploy/shopstack/envoy/dynamic.py).
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [cert(pki.ENVOY)],
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": {"filename": str(certs.ca)},
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"exact": topology.security.spiffe_id(IDENTITY)}}
                        ],
                    },
                },
            },
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1024}},
            }
        },
        "load_assignment": {
            "cluster_name": "floor-go",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
                    ]
                }
            ],
        },
    }
    return {
        "node": {"id": "bench-bare-hop", "cluster": "bench"},
        "static_resources": {
            "listeners": [
                listener("public", public_port, pki.EDGE, ["h2", "http/1.1"], mutual=False),
                listener("internal", internal_port, pki.ENVOY, ["h2"], mutual=True),
            ],
            "clusters": [cluster],
        },
    }
