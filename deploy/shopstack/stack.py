"""Run the whole shop as local processes under supervisord.

A Stack owns one run directory: supervisord's configuration, socket and pid,
one log per program, the services' databases and Envoy's configuration. The
same class backs `make up` / `make down` and the test fixtures (which use a
temporary run directory and free ports, so they never collide with a running
`make up`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shopstack import channels, edge, envoy, pki, tokens
from shopstack.topology import (
    DESCRIPTOR_SET,
    EDGE_PROGRAM,
    LOOPBACK,
    ROOT,
    Implementation,
    Telemetry,
    Topology,
    methods,
)

VENV_BIN = ROOT / ".venv" / "bin"
ENVOY_PROGRAM = "envoy"
ZIPKIN_PROGRAM = "zipkin"
PROMETHEUS_PROGRAM = "prometheus"
# A program's log file past this size is moved aside when the stack starts
# (Stack.rotate_logs): one line per call adds up under `make load`.
LOG_ROTATE_BYTES = 20 * 1024 * 1024
# Installed by the Makefile (`make telemetry-tools`): Zipkin's exec jar from
# Maven Central, pinned by version and checksum; Prometheus from Debian.
ZIPKIN_JAR = ROOT / ".tmp" / "zipkin" / "zipkin-server-exec.jar"
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
PROMETHEUS_RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


class StackError(RuntimeError):
    """Something a user must fix before the stack can run; the message says what."""


# Ports handed out by free_port in this process, so two stacks never get one twice.
_HANDED_OUT: set[int] = set()
# Below Linux's ephemeral range (32768-60999): a port picked here cannot be
# taken in the meantime by some outgoing connection's local port, which
# matters for an implementation started long after its port was chosen (a
# live swap in the tests).
_PORT_RANGE = (20000, 32767)


def free_port() -> int:
    """A port that is free on 127.0.0.1, outside the ephemeral range."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(*_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise StackError(f"no free port between {_PORT_RANGE[0]} and {_PORT_RANGE[1]}")


def process_alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def port_holder(port: int) -> str | None:
    """Who listens on a TCP port ("envoy (pid 123)"), or None if nobody does."""
    with socket.socket() as sock:
        # Like the servers themselves: connections in TIME_WAIT do not block a bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            pass
        else:
            return None
    try:
        out = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out)
    return f"{match.group(1)} (pid {match.group(2)})" if match else "another process"


@dataclass
class Stack:
    """The shop's processes in one run directory."""

    run_dir: Path
    topology: Topology
    # Extra environment per service name, e.g. a short reservation TTL in tests.
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Per service, the implementations receiving traffic and their weights.
    routing: dict[str, dict[str, int]] = field(default_factory=dict)
    log_level: str = "info"
    # Run Zipkin and Prometheus too, and have Envoy and the services send
    # spans to Zipkin. Without it every process still makes spans (their ids
    # are in the logs and propagate) and serves /metrics, but exports nothing.
    telemetry: bool = False
    # Per program, the digest of the code it was started with (code_digest).
    code: dict[str, str] = field(default_factory=dict)
    # Per host address of a hosts variant (topology.hosts), the network
    # namespace that stands for that host: its programs run in it (`ip netns
    # exec`). shopstack.netns makes them for `make test-hosts`.
    netns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        if not self.routing:
            self.routing = envoy.default_routing(self.topology)
        if self.topology.hosts and self.telemetry:
            raise StackError("Zipkin and Prometheus run on loopback only: a hosts variant runs without them")

    # -- paths -------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def envoy_dir(self) -> Path:
        return self.run_dir / "envoy"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def prometheus_dir(self) -> Path:
        return self.run_dir / "prometheus"

    @property
    def certs(self) -> pki.Certs:
        """The run directory's CA, certificates and token key (`make certs`)."""
        security = self.topology.security
        return pki.Certs(self.run_dir / security.certs_dir, security.trust_domain)

    def ensure_certs(self) -> bool:
        """Issue the certificates and token key unless they are all there."""
        return pki.ensure(self.certs, self.topology.identities())

    def make_certs(self) -> None:
        """Issue (rotate) every certificate and the token key; keep the CA."""
        pki.make_all(self.certs, self.topology.identities())

    def token(self, customer: str, scopes: Iterable[str] = ()) -> str:
        """A customer token from this stack's local issuer (`make token`)."""
        return tokens.issue(self.certs, self.topology.security, customer, scopes=scopes)

    def operator_token(self, subject: str = "operator") -> str:
        """A token with the operator scope (x-shop-impl at the edge)."""
        return self.token(subject, scopes=[self.topology.security.operator_scope])

    # -- channels ------------------------------------------------------------

    def channel(
        self, address: str, identity: str | None = pki.OPERATOR, options: channels.ChannelOptions = ()
    ) -> grpc.Channel:
        """A TLS channel trusting this stack's CA, presenting identity's
        certificate (None: no client certificate, as on the public listener)."""
        return channels.channel(self.certs, address, identity, options)

    def aio_channel(
        self, address: str, identity: str | None = pki.OPERATOR, options: channels.ChannelOptions = ()
    ) -> grpc.aio.Channel:
        return channels.aio_channel(self.certs, address, identity, options)

    def public_channel(self, options: channels.ChannelOptions = ()) -> grpc.Channel:
        """The public listener, as a customer reaches it: TLS, no client certificate."""
        return self.channel(self.public_addr, None, options)

    def internal_channel(self, identity: str = pki.OPERATOR, options: channels.ChannelOptions = ()) -> grpc.Channel:
        """The internal listener, with identity's certificate (mutual TLS)."""
        return self.channel(self.internal_addr, identity, options)

    def log_of(self, program: str) -> Path:
        return self.logs_dir / f"{program}.log"

    # -- addresses -----------------------------------------------------------

    def addr(self, service: str, lang: str | None = None) -> str:
        """A service implementation's own address (its first replica's), bypassing Envoy."""
        impl = self.topology.impl_of(service, lang)
        return f"{self.topology.host_of(impl.cluster)}:{self.topology.port_of(impl)}"

    @property
    def edge_host(self) -> str:
        return self.topology.host_of(EDGE_PROGRAM)

    @property
    def public_addr(self) -> str:
        return f"{self.edge_host}:{self.topology.public_port}"

    @property
    def internal_addr(self) -> str:
        return f"{self.edge_host}:{self.topology.internal_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.edge_host}:{self.topology.admin_port}"

    @property
    def zipkin_url(self) -> str:
        """Zipkin's UI and query API (/api/v2/...)."""
        return f"http://{LOOPBACK}:{self.topology.telemetry.zipkin_port}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus' UI and HTTP API (/api/v1/...)."""
        return f"http://{LOOPBACK}:{self.topology.telemetry.prometheus_port}"

    def metrics_addr(self, impl: Implementation, host: str | None = None) -> str:
        """Where an implementation (on host: that replica) serves /metrics."""
        return f"{host or self.topology.host_of(impl.cluster)}:{self.topology.metrics_port_of(impl)}"

    def running_impls(self) -> list[Implementation]:
        return [
            self.topology.services[name].implementations[lang]
            for name, weights in self.routing.items()
            for lang in sorted(weights)
        ]

    # -- configuration -------------------------------------------------------

    def programs(self) -> list[tuple[str, Implementation, str]]:
        """(program name, implementation, host address) of every service
        process: one per running implementation, or one per replica in a
        hosts variant (Topology.replicas)."""
        return [
            (program, impl, host) for impl in self.running_impls() for program, host in self.topology.replicas(impl)
        ]

    def launcher(self, host: str) -> list[str]:
        """What a program's command is prefixed with to run on its host."""
        namespace = self.netns.get(host)
        return ["ip", "netns", "exec", namespace] if namespace else []

    def program_env(self, impl: Implementation, host: str | None = None, replica: int = 0) -> dict[str, str]:
        """The environment of one service process (docs/conventions.md); host
        and replica say which replica in a hosts variant."""
        pair = self.certs.pair(impl.service)
        host = host or self.topology.host_of(impl.cluster)
        # A stateless service's replicas each keep their own copy of its
        # (read-only) database; every implementation of a service shares it.
        database = f"{impl.service}.db" if replica == 0 else f"{impl.service}-{replica + 1}.db"
        env = {
            "SHOP_LISTEN_ADDR": f"{host}:{self.topology.port_of(impl)}",
            # Mutual TLS: the service's own identity, and the CA its callers'
            # certificates must come from (docs/security.md).
            "SHOP_TLS_CERT_FILE": str(pair.cert),
            "SHOP_TLS_KEY_FILE": str(pair.key),
            "SHOP_TLS_CA_FILE": str(self.certs.ca),
            # Every implementation of a service shares its database, so a
            # swapped-in implementation carries on with the same data.
            "SHOP_DB_PATH": str(self.data_dir / database),
            "SHOP_SEED_FILE": str(ROOT / "data" / "products.json"),
            "SHOP_DESCRIPTOR_SET": str(DESCRIPTOR_SET),
            "SHOP_LOG_LEVEL": self.log_level,
            "SHOP_METRICS_ADDR": self.metrics_addr(impl, host),
            "SHOP_TRACE_SAMPLE_RATIO": f"{self.topology.telemetry.sampling_ratio:g}",
            "SHOP_MAX_STREAMS_PER_CLIENT": str(self.topology.limits.max_streams_per_client),
            "PYTHONUNBUFFERED": "1",
        }
        if impl.service in pki.SHARED_KEYS:
            # What every replica of the service must share (the catalog's page-token key).
            env[pki.SHARED_KEYS[impl.service][1]] = str(self.certs.shared_key(impl.service))
        if self.telemetry:
            env["SHOP_ZIPKIN_URL"] = f"{self.zipkin_url}/api/v2/spans"
        if impl.service == "reflection":
            # The edge's grpc.health.v1 answers per service from Envoy's cluster health.
            env["SHOP_ENVOY_ADMIN_ADDR"] = f"{self.edge_host}:{self.topology.admin_port}"
        deps = self.topology.services[impl.service].depends_on
        for dep in deps:
            # Service-to-service calls go through Envoy's internal listener.
            env[f"SHOP_{dep.upper()}_ADDR"] = self.internal_addr
        env.update(self.env.get(impl.service, {}))
        return env

    def supervisord_conf(self) -> str:
        def program(name: str, command: Iterable[str], env: Mapping[str, str], stopwait: int) -> str:
            environment = ",".join(f'{k}="{v}"' for k, v in sorted(env.items()))
            # The program's stdout and stderr are its log file itself, opened
            # for appending by a shell that then execs the program (so the pid
            # supervisord signals is the program's). supervisord does not copy
            # the lines through a pipe: one Python process copying every
            # service's per-call line and Envoy's access log fell behind on a
            # loaded machine, the pipes filled, and the programs blocked in
            # their log writes until Envoy's health checks timed out
            # (docs/performance.md, "Found while measuring").
            redirect = f'exec "$0" "$@" >>{shlex.quote(str(self.log_of(name)))} 2>&1'
            return (
                f"[program:{name}]\n"
                f"command=/bin/sh -c {shlex.quote(redirect)} {' '.join(command)}\n"
                f"directory={ROOT}\n"
                f"environment={environment}\n"
                "autostart=true\nautorestart=true\nstartsecs=1\nstartretries=5\n"
                f"stopsignal=TERM\nstopwaitsecs={stopwait}\nstopasgroup=true\nkillasgroup=true\n"
                "stdout_logfile=NONE\nredirect_stderr=true\n\n"
            )

        text = (
            "; Generated by deploy/shopstack from deploy/stack.toml; do not edit.\n"
            f"[unix_http_server]\nfile={self.run_dir}/supervisor.sock\nchmod=0700\n\n"
            f"[supervisord]\nlogfile={self.logs_dir}/supervisord.log\npidfile={self.run_dir}/supervisord.pid\n"
            f"childlogdir={self.logs_dir}\nidentifier=shop-{self.run_dir.name}\n"
            "loglevel=info\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[supervisorctl]\nserverurl=unix://{self.run_dir}/supervisor.sock\n\n"
        )
        for impl in self.running_impls():
            for replica, (name, host) in enumerate(self.topology.replicas(impl)):
                command = [*self.launcher(host), *(part.format(root=ROOT, run=self.run_dir) for part in impl.command)]
                text += program(name, command, self.program_env(impl, host, replica), stopwait=20)
        envoy_cmd = [
            *self.launcher(self.edge_host),
            str(VENV_BIN / "envoy"),
            f"-c {self.envoy_dir}/envoy.yaml",
            "--disable-hot-restart",  # several stacks (make up, tests) may run at once
            "--log-level warn",
            "--drain-time-s 5",
            "--concurrency 2",  # this machine has 2 cores
            "--file-flush-interval-msec 500",  # access logs reach `make logs` within half a second
        ]
        text += program(ENVOY_PROGRAM, envoy_cmd, {}, stopwait=10)
        if self.telemetry:
            port = self.topology.telemetry.zipkin_port
            zipkin_cmd = [
                "java",
                # A small heap and the quick JIT tier: Zipkin starts in about
                # 20 s on two cores and keeps its spans in memory.
                "-Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
                f"-jar {ZIPKIN_JAR}",
                f"--armeria.ports[0].port={port} --armeria.ports[0].ip=127.0.0.1",
                "--armeria.ports[0].protocols[0]=http",
            ]
            text += program(ZIPKIN_PROGRAM, zipkin_cmd, {"STORAGE_TYPE": "mem", "MEM_MAX_SPANS": "200000"}, stopwait=10)
            prometheus_cmd = [
                str(PROMETHEUS_BIN),
                f"--config.file={self.prometheus_dir}/prometheus.yml",
                f"--storage.tsdb.path={self.prometheus_dir}/data",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.topology.telemetry.prometheus_port}",
            ]
            text += program(PROMETHEUS_PROGRAM, prometheus_cmd, {}, stopwait=10)
        return text

    def prometheus_conf(self) -> dict[str, object]:
        """prometheus.yml: the services (from targets.json, rewritten on a
        swap), Envoy's admin, Zipkin and Prometheus itself, with the shop's rules."""
        interval = f"{self.topology.telemetry.scrape_interval_seconds:g}s"

        def static(job: str, port: int, path: str, **extra: object) -> dict[str, object]:
            return {
                "job_name": job,
                "metrics_path": path,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                **extra,
            }

        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(PROMETHEUS_RULES)],
            "scrape_configs": [
                {
                    "job_name": "shop",
                    "file_sd_configs": [
                        {"files": [str(self.prometheus_dir / "targets.json")], "refresh_interval": "2s"}
                    ],
                },
                static("envoy", self.topology.admin_port, "/stats/prometheus", params={"usedonly": [""]}),
                static("zipkin", self.topology.telemetry.zipkin_port, "/prometheus"),
                static("prometheus", self.topology.telemetry.prometheus_port, "/metrics"),
            ],
        }

    def prometheus_targets(self) -> list[dict[str, object]]:
        """Every running implementation's metrics address, labelled with its service and language."""
        return [
            {"targets": [self.metrics_addr(impl, host)], "labels": {"service": impl.service, "impl": impl.lang}}
            for _, impl, host in self.programs()
        ]

    def render(self) -> None:
        """Write supervisord.conf, Envoy's configuration and state.json."""
        for folder in (self.logs_dir, self.data_dir, self.envoy_dir, self.prometheus_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.ensure_certs()
        envoy.render(self.topology, self.envoy_dir, self.envoy_mode(), self.routing)
        if self.telemetry:
            (self.prometheus_dir / "prometheus.yml").write_text(yaml.safe_dump(self.prometheus_conf(), sort_keys=False))
        self.conf.write_text(self.supervisord_conf())
        self.save_state()

    def envoy_mode(self) -> envoy.Mode:
        """Where this stack's Envoy finds its files, and where it sends its spans."""
        tel = self.topology.telemetry
        return envoy.local_mode(
            self.envoy_dir,
            DESCRIPTOR_SET,
            self.certs.directory,
            zipkin_port=tel.zipkin_port if self.telemetry else None,
            sampling_ratio=tel.sampling_ratio,
            topology=self.topology,
        )

    def save_state(self) -> None:
        state = {
            "ports": {
                "public": self.topology.public_port,
                "internal": self.topology.internal_port,
                "admin": self.topology.admin_port,
                **{impl.cluster: self.topology.port_of(impl) for impl in self.running_impls()},
                # The metrics ports too: a stack read back from this file
                # (default_stack: make swap, make demo) must render every
                # program as it runs, or rewriting supervisord's configuration
                # would restart them all on other ports.
                **{impl.metrics_key: self.topology.metrics_port_of(impl) for impl in self.running_impls()},
            },
            "routing": self.routing,
            "env": {k: dict(v) for k, v in self.env.items()},
            "telemetry": self.telemetry,
            # Where traces and metrics go and how many traces are kept: a test
            # stack runs Zipkin and Prometheus on free ports and samples every
            # trace, and every program's environment says so.
            "telemetry_settings": dataclasses.asdict(self.topology.telemetry),
            "code": self._started_code(),
        }
        if self.topology.hosts:
            state["hosts"] = {program: list(addresses) for program, addresses in self.topology.hosts.items()}
            state["netns"] = dict(self.netns)
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        # Prometheus re-reads its targets within seconds (file_sd), so a swap's
        # new implementation is scraped without a restart.
        self.prometheus_dir.mkdir(parents=True, exist_ok=True)
        targets = self.prometheus_dir / "targets.json"
        tmp = targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.prometheus_targets(), indent=2) + "\n")
        os.replace(tmp, targets)

    def _started_code(self) -> dict[str, str]:
        """The code digest of every running program: as recorded when it
        started, or as it is now for a program starting now."""
        running = {impl.cluster: impl for impl in self.running_impls()}
        self.code = {name: self.code.get(name) or impl.code_digest() for name, impl in running.items()}
        return self.code

    def changed_code(self) -> list[str]:
        """The running programs whose code differs from what they started with."""
        return [impl.cluster for impl in self.running_impls() if impl.code_digest() != self.code.get(impl.cluster)]

    def restart_changed(self, timeout: float = 90.0) -> list[str]:
        """Restart the programs whose code changed (`make up` on a running stack); returns them."""
        changed = self.changed_code()
        for program in changed:
            self.ctl("restart", program)
            self.code.pop(program, None)
        if changed:
            self.save_state()
        self.wait_healthy(timeout)
        return changed

    # -- lifecycle -----------------------------------------------------------

    def supervisord_pid(self) -> int | None:
        try:
            pid = int((self.run_dir / "supervisord.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def check_ports(self) -> None:
        if self.topology.hosts:
            return  # every host of a hosts variant has ports of its own
        busy = []
        ports = self.topology.all_ports()
        if self.telemetry:
            ports.update(self.topology.telemetry_ports())
        for what, port in ports.items():
            holder = port_holder(port)
            if holder:
                busy.append(f"port {port} ({what}) is already in use by {holder}")
        if busy:
            raise StackError(
                "cannot start the stack:\n  "
                + "\n  ".join(busy)
                + "\nStop whatever holds it (if it is this shop, `make down`), or change deploy/stack.toml."
            )

    def up(self, timeout: float = 90.0, *, wait_telemetry: bool = True) -> None:
        """Start everything (unless already running) and wait until it is all
        healthy; with wait_telemetry, Zipkin and Prometheus too."""
        if self.telemetry:
            missing = [str(p) for p in (ZIPKIN_JAR, PROMETHEUS_BIN) if not p.exists()]
            if missing:
                raise StackError(f"{', '.join(missing)} missing; `make telemetry-tools` installs them")
        if self.supervisord_pid() is None:
            self.check_ports()
            self.code = {}  # every program starts now, with the code as it is
            self.render()
            self.rotate_logs()
            subprocess.run(
                [str(VENV_BIN / "supervisord"), "-c", str(self.conf)],
                check=True,
                cwd=ROOT,
            )
        self.wait_healthy(timeout)
        if self.telemetry and wait_telemetry:
            self.wait_telemetry(timeout)

    def telemetry_health(self) -> dict[str, str]:
        """Zipkin's and Prometheus' readiness: "UP", or why not."""
        checks = {
            ZIPKIN_PROGRAM: f"{self.zipkin_url}/health",
            PROMETHEUS_PROGRAM: f"{self.prometheus_url}/-/ready",
        }
        states = {}
        for name, url in checks.items():
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    resp.read()
                states[name] = "UP"
            except OSError as err:
                states[name] = f"not ready ({err})"
        return states

    def wait_telemetry(self, timeout: float = 90.0) -> None:
        """Block until Zipkin and Prometheus answer their readiness checks."""
        deadline = time.monotonic() + timeout
        pending: dict[str, str] = {}
        while time.monotonic() < deadline:
            pending = {k: v for k, v in self.telemetry_health().items() if v != "UP"}
            if not pending:
                return
            time.sleep(0.5)
        details = "\n".join(f"  {name}: {state}" for name, state in pending.items())
        tails = "\n".join(self.tail(name, 15) for name in pending)
        raise StackError(f"telemetry did not become ready within {timeout:.0f}s:\n{details}\n{tails}")

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        # supervisorctl exits non-zero when a program is not RUNNING; status callers want the text.
        if check and result.returncode not in (0, 3):
            raise StackError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def down(self, timeout: float = 60.0) -> None:
        """Stop every process and supervisord itself; leaves the data in place."""
        pid = self.supervisord_pid()
        if pid is None:
            return
        self.ctl("shutdown", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # supervisord removes its pidfile a moment before it exits: wait for the process.
            if not process_alive(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        raise StackError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s and was killed")

    def stop_program(self, program: str) -> None:
        self.ctl("stop", program)

    def start_program(self, program: str) -> None:
        self.ctl("start", program)

    def signal_program(self, program: str, sig: str) -> None:
        """Send a signal (e.g. "KILL", "TERM") to a program; supervisord restarts it."""
        self.ctl("signal", sig, program)

    def pid_of(self, program: str) -> int | None:
        out = self.ctl("pid", program, check=False).strip()
        return int(out) if out.isdigit() and out != "0" else None

    def set_runtime(self, **values: str | int) -> None:
        """Change Envoy runtime values (e.g. the fault filters) through the admin interface."""
        edge.set_runtime(self.admin_url, **values)

    def envoy_stats(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges, optionally only those starting with prefix."""
        return edge.envoy_stats(self.admin_url, prefix)

    # -- health --------------------------------------------------------------

    def service_health(self, impl: Implementation, timeout: float = 2.0, host: str | None = None) -> str:
        """grpc.health.v1 of an implementation (on host: that replica), asked directly."""
        service = self.topology.services[impl.service]
        name = "" if impl.service == "reflection" else service.proto
        host = host or self.topology.host_of(impl.cluster)
        try:
            with self.channel(f"{host}:{self.topology.port_of(impl)}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=name), timeout=timeout
                )
        except grpc.RpcError as err:
            return f"DOWN ({err.code().name})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def envoy_clusters(self) -> dict[str, str]:
        """Each Envoy cluster's host health, from the admin interface."""
        with urllib.request.urlopen(f"{self.admin_url}/clusters?format=json", timeout=2) as resp:
            data = json.load(resp)
        health = {}
        for cluster in data.get("cluster_statuses", []):
            hosts = cluster.get("host_statuses", [])
            states = [h.get("health_status", {}).get("eds_health_status", "") for h in hosts]
            failed = any(
                flag
                for h in hosts
                for flag, value in h.get("health_status", {}).items()
                if flag.startswith("failed") and value
            )
            health[cluster["name"]] = "UNHEALTHY" if failed or not hosts else (states[0] or "HEALTHY")
        return health

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Block until every service is SERVING and Envoy sees every cluster healthy."""
        deadline = time.monotonic() + timeout
        pending: dict[str, str] = {}
        while time.monotonic() < deadline:
            fatal = re.findall(r"^(\S+)\s+FATAL", self.ctl("status", check=False), re.MULTILINE)
            if fatal:
                tails = "\n".join(self.tail(name, 15) for name in fatal)
                raise StackError(f"{', '.join(fatal)} kept exiting and supervisord gave up:\n{tails}")
            pending = {}
            for program, impl, host in self.programs():
                state = self.service_health(impl, timeout=1.0, host=host)
                if state != "SERVING":
                    pending[program] = state
            if not pending:
                try:
                    clusters = self.envoy_clusters()
                except OSError as err:
                    pending[ENVOY_PROGRAM] = f"admin not answering ({err})"
                else:
                    for impl in self.running_impls():
                        if clusters.get(impl.cluster) != "HEALTHY":
                            pending[f"envoy cluster {impl.cluster}"] = clusters.get(impl.cluster, "missing")
            if not pending:
                pending = self._unroutable()
            if not pending:
                return
            time.sleep(0.2)
        details = "\n".join(f"  {name}: {state}" for name, state in pending.items())
        tails = "\n".join(self.tail(name, 15) for name in pending if (self.logs_dir / f"{name}.log").exists())
        raise StackError(f"the stack did not become healthy within {timeout:.0f}s:\n{details}\n{tails}")

    def _unroutable(self) -> dict[str, str]:
        """Implementations Envoy does not route to yet, though its admin says healthy.

        Envoy's workers pick up a host's health a moment after the admin page
        shows it, so send each implementation a real call through the internal
        listener: its first read-only unary RPC with an empty request, pinned
        with x-shop-impl. Any answer but UNAVAILABLE means it is routed.
        """
        rpcs = methods()
        pending = {}
        with self.internal_channel() as channel:
            for impl in self.running_impls():
                service = self.topology.services[impl.service]
                probe = next((m for m in rpcs.get(service.proto, []) if m.retry_safe and not m.streaming), None)
                if probe is None:
                    continue
                call = channel.unary_unary(probe.path, request_serializer=None, response_deserializer=None)
                try:
                    call(b"", timeout=2, metadata=[(envoy.IMPL_HEADER, impl.lang)])
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        pending[f"envoy route to {impl.cluster}"] = f"UNAVAILABLE ({err.details()})"
        return pending

    def rotate_logs(self) -> None:
        """Move each log file past LOG_ROTATE_BYTES to <name>.log.1 (replacing
        the last one). The programs append to their files themselves, so this
        runs when the stack starts, with nothing writing to them."""
        for log in self.logs_dir.glob("*.log"):
            if log.stat().st_size > LOG_ROTATE_BYTES:
                log.replace(log.with_name(log.name + ".1"))

    def tail(self, program: str, lines: int = 40) -> str:
        path = self.log_of(program)
        if not path.exists():
            return f"--- {program}: no log yet ---"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)

    def status(self) -> str:
        lines = [self.ctl("status", check=False).rstrip()]
        lines.append("")
        for program, impl, host in self.programs():
            address = f"{host}:{self.topology.port_of(impl)}"
            lines.append(f"{program:22} {address:18} grpc.health.v1: {self.service_health(impl, host=host)}")
        try:
            for name, state in sorted(self.envoy_clusters().items()):
                lines.append(f"envoy cluster {name:22} {state}")
        except OSError as err:
            lines.append(f"envoy admin {self.admin_url}: not answering ({err})")
        if self.telemetry:
            urls = {ZIPKIN_PROGRAM: self.zipkin_url, PROMETHEUS_PROGRAM: self.prometheus_url}
            for name, state in self.telemetry_health().items():
                lines.append(f"{name:22} {urls[name]:28} {state}")
        return "\n".join(lines)


def default_stack() -> Stack:
    """The stack of `make up`: the default ports and the .run directory."""
    from shopstack import topology

    run_dir = Path(os.environ.get("SHOP_RUN_DIR", ROOT / ".run"))
    stack = Stack(run_dir=run_dir, topology=topology.load(), telemetry=True)
    if stack.state_file.exists():
        state = json.loads(stack.state_file.read_text())
        stack.routing = {k: dict(v) for k, v in state.get("routing", {}).items()} or stack.routing
        stack.telemetry = bool(state.get("telemetry", True))
        stack.code = dict(state.get("code", {}))
        # The programs' extra environment, so that rewriting supervisord's
        # configuration (a swap) does not restart them with a different one.
        stack.env = {k: dict(v) for k, v in state.get("env", {}).items()}
        if stack.supervisord_pid() is not None:
            # A running stack keeps the ports it started with (a test's stack runs on free ones).
            ports = dict(state.get("ports", {}))
            topo = stack.topology
            stack.topology = topo.with_ports(
                ports.pop("public", topo.public_port),
                ports.pop("internal", topo.internal_port),
                ports.pop("admin", topo.admin_port),
                {**topo.ports, **ports},
            )
            if "telemetry_settings" in state:
                stack.topology = dataclasses.replace(stack.topology, telemetry=Telemetry(**state["telemetry_settings"]))
            # ... and the hosts it runs on (a hosts variant: `make test-hosts`).
            stack.topology = stack.topology.with_hosts({k: tuple(v) for k, v in state.get("hosts", {}).items()})
            stack.netns = dict(state.get("netns", {}))
    return stack


def die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def remove_data(stack: Stack) -> None:
    if stack.supervisord_pid() is not None:
        die("the stack is running; `make down` first")
    shutil.rmtree(stack.data_dir, ignore_errors=True)
