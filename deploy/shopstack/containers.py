"""docker-compose.yml for real: the engine, the base images, the images, up and down.

With a Docker daemon that answers and its compose plugin, everything goes
through `docker compose`. Otherwise podman runs the containers (rootful, with
deploy/containers/containers.conf) and podman-compose (pinned in
deploy/containers/requirements.txt) reads the same docker-compose.yml.

Where an image registry answers, the Dockerfiles start FROM their public
default bases. Where none does (this project's machines), a Debian bookworm
root file system made with debootstrap becomes localhost/shop-base/debian,
and deploy/containers/base.Dockerfile builds the language bases on it; the
service builds get them through their base build arguments.

`python -m shopstack containers {build,up,wait,down}`; the Makefile's
docker-build, docker-up and docker-down, and tests/containers, use these.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shopstack import topology
from shopstack.envoy import default_routing
from shopstack.topology import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
CONTAINERS_CONF = ROOT / "deploy" / "containers" / "containers.conf"
BASE_DOCKERFILE = ROOT / "deploy" / "containers" / "base.Dockerfile"
WORK = ROOT / ".tmp" / "containers"
VENV_BIN = ROOT / ".venv" / "bin"
# What `make certs` wrote (the default run directory's certs_dir), and the copy
# the containers mount: only what they need, each key readable by the user the
# images run as (USER 10001 in every Dockerfile) and by nobody else.
HOST_CERTS = ROOT / ".run" / "certs"
CONTAINER_CERTS = ROOT / ".run" / "container-certs"
CONTAINER_UID = 10001

LOCAL_ROOTFS = "localhost/shop-base/rootfs:bookworm"
# The bases built on it, by the build argument each replaces.
LOCAL_BASES = {
    "SHOP_DEBIAN_IMAGE": ("debian", "localhost/shop-base/debian:bookworm"),
    "SHOP_PYTHON_IMAGE": ("python", "localhost/shop-base/python:3.11"),
    "SHOP_NODE_IMAGE": ("node", "localhost/shop-base/node:20"),
    "SHOP_GO_IMAGE": ("golang", "localhost/shop-base/golang:1.26"),
}
# This machine's trusted certificate authorities (Debian's bundle).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# A small public image whose pull tells whether a registry answers.
REGISTRY_PROBE = "docker.io/library/debian:bookworm-slim"


class ContainerError(RuntimeError):
    """Something the caller can act on; the message says what."""


@dataclass(frozen=True)
class Engine:
    """The container CLI and the compose command that drives it."""

    name: str
    cli: tuple[str, ...]
    compose: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def run(self, *args: str, check: bool = True, timeout: float = 600, quiet: bool = False) -> str:
        return _run([*self.cli, *args], self.environ(), check=check, timeout=timeout, quiet=quiet)


def _run(
    command: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 600, quiet: bool = False
) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise ContainerError(f"`{' '.join(command)}` failed ({result.returncode}):\n{tail}")
    if not quiet and result.stderr.strip() and result.returncode != 0:
        print(result.stderr.strip(), file=sys.stderr)
    return result.stdout


def _answers(command: list[str], env: dict[str, str] | None = None, timeout: float = 15) -> bool:
    try:
        return subprocess.run(command, env=env, capture_output=True, timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect() -> Engine:
    """Docker when its daemon and compose plugin answer, podman otherwise."""
    if shutil.which("docker") and _answers(["docker", "info"]) and _answers(["docker", "compose", "version"]):
        return Engine("docker", ("docker",), ("docker", "compose"))
    if not shutil.which("podman"):
        raise ContainerError(
            "no Docker daemon answers and podman is not installed (`make docker-up` installs it with apt)"
        )
    compose = VENV_BIN / "podman-compose"
    if not compose.exists():
        raise ContainerError(
            f"{compose} is missing (`make docker-up` installs it from deploy/containers/requirements.txt)"
        )
    # Docker's image format: the OCI one has no HEALTHCHECK, and podman drops it.
    env = {"CONTAINERS_CONF": str(CONTAINERS_CONF), "BUILDAH_FORMAT": "docker"}
    return Engine("podman", ("podman",), (str(compose), "--podman-path", shutil.which("podman") or "podman"), env)


def registry_reachable(engine: Engine) -> bool:
    """Can the engine pull a public image? (No image registry answers on this project's machines.)"""
    return _answers([*engine.cli, "pull", "--quiet", REGISTRY_PROBE], engine.environ(), timeout=60)


def image_exists(engine: Engine, ref: str) -> bool:
    return _answers([*engine.cli, "image", "inspect", ref], engine.environ())


def _rootfs_image(engine: Engine) -> None:
    """debootstrap a minimal bookworm and import it (a minute or two, once)."""
    if image_exists(engine, LOCAL_ROOTFS):
        return
    if not shutil.which("debootstrap"):
        raise ContainerError("debootstrap is not installed (`make docker-up` installs it with apt)")
    rootfs = WORK / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    print("making a Debian bookworm root file system with debootstrap ...", flush=True)
    _run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], dict(os.environ), timeout=1800)
    # The package lists and caches debootstrap leaves behind are not needed.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    tarball = WORK / "debian-rootfs.tar"
    _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], dict(os.environ), timeout=600)
    engine.run("import", "--change", 'CMD ["/bin/bash"]', str(tarball), LOCAL_ROOTFS, timeout=900)
    tarball.unlink()
    shutil.rmtree(rootfs, ignore_errors=True)


def _host_node_tar(out: Path) -> None:
    """This machine's Node (node, npm, corepack and headers), moved under /usr/local."""
    node = shutil.which("node")
    if not node:
        raise ContainerError("node is not installed on this machine")
    prefix = Path(os.path.realpath(node)).parent.parent  # /usr or /usr/local
    members = [
        prefix / "bin" / "node",
        prefix / "bin" / "npm",
        prefix / "bin" / "npx",
        prefix / "include" / "node",
        prefix / "lib" / "node_modules" / "npm",
    ]
    with tarfile.open(out, "w") as tar:
        for member in members:
            if member.exists() or member.is_symlink():
                tar.add(str(member), arcname=f"usr/local/{member.relative_to(prefix)}")


def _host_go_tar(out: Path) -> None:
    goroot = _run(["go", "env", "GOROOT"], dict(os.environ)).strip()
    with tarfile.open(out, "w") as tar:
        tar.add(goroot, arcname="go", filter=lambda info: None if "/pkg/obj/" in info.name else info)


def local_bases(engine: Engine) -> dict[str, str]:
    """Build (once) the local base images; returns the build arguments naming them."""
    _rootfs_image(engine)
    missing = [target for target, ref in LOCAL_BASES.values() if not image_exists(engine, ref)]
    if missing:
        context = WORK / "base"
        context.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, context / "ca-certificates.crt")
        if "node" in missing:
            _host_node_tar(context / "node.tar")
        if "golang" in missing:
            _host_go_tar(context / "go.tar")
        for target, ref in LOCAL_BASES.values():
            if target in missing:
                print(f"building {ref} ...", flush=True)
                engine.run(
                    "build", "-f", str(BASE_DOCKERFILE), "--target", target, "-t", ref, str(context), timeout=1800
                )
        shutil.rmtree(context, ignore_errors=True)
    args = {var: ref for var, (_, ref) in LOCAL_BASES.items()}
    # The Go binaries are static: the runtime image needs nothing at all.
    args["SHOP_GO_RUNTIME_IMAGE"] = "scratch"
    return args


def base_args(engine: Engine, bases: str) -> dict[str, str]:
    """The base images to build on: "public", "local" or "auto" (local when no registry answers)."""
    if bases not in {"public", "local", "auto"}:
        raise ContainerError(f"BASES must be public, local or auto, not {bases!r}")
    if bases == "public" or (bases == "auto" and registry_reachable(engine)):
        return {}
    return local_bases(engine)


@dataclass(frozen=True)
class Project:
    """One compose project: its name, files, and the host ports it publishes."""

    name: str = "shop"
    files: tuple[Path, ...] = (COMPOSE_FILE,)
    env: dict[str, str] = field(default_factory=dict)

    def command(self, engine: Engine, *args: str) -> list[str]:
        files = [arg for f in self.files for arg in ("-f", str(f))]
        return [*engine.compose, "-p", self.name, *files, *args]

    def run(self, engine: Engine, *args: str, timeout: float = 1800, check: bool = True) -> str:
        return _run(self.command(engine, *args), engine.environ(self.env), timeout=timeout, check=check)

    def stream(self, engine: Engine, *args: str, timeout: float = 3600) -> None:
        """Run with the output on the terminal (builds are long; show progress)."""
        command = self.command(engine, *args)
        result = subprocess.run(command, env=engine.environ(self.env), timeout=timeout, check=False)
        if result.returncode != 0:
            raise ContainerError(f"`{' '.join(command)}` failed ({result.returncode})")


def build(engine: Engine, project: Project, bases: str = "auto") -> float:
    """Build every image of the compose file; returns the seconds it took."""
    start = time.monotonic()
    args = base_args(engine, bases)
    with_bases = Project(project.name, project.files, {**project.env, **args})
    with_bases.stream(engine, "build")
    return time.monotonic() - start


def wait_healthy(admin: str, timeout: float = 180) -> None:
    """Until Envoy (admin at host:port) sees every cluster's every host healthy."""
    deadline = time.monotonic() + timeout
    last = "Envoy's admin interface did not answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{admin}/clusters?format=json", timeout=5) as reply:
                clusters = json.load(reply).get("cluster_statuses", [])
            unhealthy = [
                c["name"]
                for c in clusters
                if not c.get("host_statuses")
                or any(
                    h.get("health_status", {}).get("eds_health_status") != "HEALTHY"
                    or any(k.startswith("failed") for k in h.get("health_status", {}))
                    for h in c["host_statuses"]
                )
            ]
            if clusters and not unhealthy:
                return
            last = f"clusters not healthy yet: {', '.join(sorted(unhealthy)) or 'none known'}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = f"Envoy's admin interface at {admin}: {err}"
        time.sleep(1)
    raise ContainerError(f"the compose stack did not become healthy in {timeout:g} s: {last}")


def published(engine: Engine, project: Project, service: str, port: int) -> str:
    """host:port where a service's container port is published."""
    out = project.run(engine, "port", service, str(port)).strip().splitlines()
    if not out:
        raise ContainerError(f"{service} publishes no port {port}")
    host, _, host_port = out[-1].strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in {"0.0.0.0", "::"}:
        host = "127.0.0.1"
    return f"{host}:{host_port}"


def container_ids(engine: Engine, project: Project) -> dict[str, str]:
    """Compose service name -> container id, from the project's labels."""
    out = engine.run(
        "ps", "--all", "--filter", f"label=com.docker.compose.project={project.name}", "--format", "json"
    ).strip()
    # podman prints one JSON list, Docker one JSON object per line (labels as "k=v,k=v").
    rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
    ids = {}
    for row in rows or []:
        labels = row.get("Labels") or {}
        if isinstance(labels, str):
            labels = dict(pair.split("=", 1) for pair in labels.split(",") if "=" in pair)
        service = labels.get("com.docker.compose.service")
        if service:
            ids[service] = str(row.get("Id") or row.get("ID"))
    return ids


def image_sizes(engine: Engine, refs: list[str]) -> dict[str, int]:
    sizes = {}
    for ref in refs:
        out = engine.run("image", "inspect", "--format", "{{.Size}}", ref)
        sizes[ref] = int(re.sub(r"\D", "", out) or 0)
    return sizes


# -- the certificates the containers mount -----------------------------------


def stage_certs(source: Path = HOST_CERTS, dest: Path = CONTAINER_CERTS) -> list[Path]:
    """Copy the CA certificate, the JWKS and each container identity's
    certificate and key from source (`make certs`) into dest, which
    docker-compose.yml mounts file by file.

    `make certs` writes keys 0600 for the user who ran it (root here); the
    containers run as uid 10001, so each key is copied owned by that uid,
    mode 0400. Without root (a Docker daemon's user) the key cannot change
    owner and is copied 0644 instead, readable by the container's user. The
    CA key, the token signing key and the operator's key are not copied:
    nothing in a container needs them. Returns the files written."""
    from shopstack import pki, topology

    topo = topology.load()
    certs = pki.Certs(source, topo.security.trust_domain)
    identities = [name for name in topo.identities() if name != pki.OPERATOR] + [pki.EDGE]
    missing = [p for p in (certs.ca, certs.jwks) if not p.exists()]
    missing += [p for name in identities for p in (certs.pair(name).cert, certs.pair(name).key) if not p.exists()]
    if missing:
        raise ContainerError(f"missing certificates ({', '.join(map(str, missing))}): run `make certs`")
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    as_root = os.geteuid() == 0
    written = []
    public = [certs.ca, certs.jwks, *(certs.pair(name).cert for name in identities)]
    for path in public:
        written.append(_copy(path, dest / path.name, 0o644, None))
    for name in identities:
        key = certs.pair(name).key
        if as_root:
            written.append(_copy(key, dest / key.name, 0o400, CONTAINER_UID))
        else:
            written.append(_copy(key, dest / key.name, 0o644, None))
    return written


def _copy(source: Path, dest: Path, mode: int, uid: int | None) -> Path:
    """Write then rename (a running container never reads half a file)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(source.read_bytes())
    if uid is not None:
        os.chown(tmp, uid, uid)
    tmp.chmod(mode)
    os.replace(tmp, dest)
    return dest


# -- the commands the Makefile runs ------------------------------------------

TEST_OVERRIDE = ROOT / "deploy" / "containers" / "compose.test.yml"
SERVICE_IMAGES = ("catalog-go", "inventory-node", "payments-python", "orders-python", "reflection-go", "envoy")


def _free_port() -> int:
    # Imported here: stack.py pulls in grpc, which `containers build` does not need.
    from shopstack.stack import free_port

    return free_port()


def up(engine: Engine, project: Project, timeout: float = 240) -> None:
    """Start the project (images already built) and wait until Envoy routes to every service."""
    project.run(engine, "up", "--detach", "--no-build")
    admin = published(engine, project, "envoy", 9901)
    try:
        wait_healthy(admin, timeout)
    except ContainerError:
        print(project.run(engine, "logs", "--tail", "30", check=False)[-6000:], file=sys.stderr)
        raise


def down(engine: Engine, project: Project, *, volumes: bool = False) -> None:
    project.run(engine, "down", *(["--volumes"] if volumes else []), check=False, timeout=300)
    if engine.name == "podman" and volumes:
        # podman-compose leaves named volumes behind on some versions: remove ours by label.
        out = engine.run(
            "volume", "ls", "--quiet", "--filter", f"label=io.podman.compose.project={project.name}", check=False
        )
        for volume in out.split():
            engine.run("volume", "rm", "--force", volume, check=False)
    leftovers = container_ids(engine, project)
    if leftovers:
        engine.run("rm", "--force", *leftovers.values(), check=False)


def edge_of(engine: Engine, project: Project, internal: bool = True) -> dict[str, object]:
    """The running project's Envoy addresses and each program's log command (shopstack.edge.Edge)."""
    ids = container_ids(engine, project)
    return {
        "public": published(engine, project, "envoy", 8080),
        "internal": published(engine, project, "envoy", 8081) if internal else "",
        "admin": published(engine, project, "envoy", 9901),
        # The client side: the CA that signed Envoy's certificates, the
        # operator's certificate for the internal listener, the token key.
        "certs": str(HOST_CERTS),
        "logs": {service: [*engine.cli, "logs", cid] for service, cid in ids.items()},
        # What docker-compose.yml runs: every service's default implementation.
        "routing": default_routing(topology.load()),
        "compose": {
            "engine": engine.name,
            "project": project.name,
            "files": [str(f) for f in project.files],
            "env": project.env,
        },
    }


def compose_test(engine: Engine, bases: str, pytest_args: list[str]) -> int:
    """Build, start a private project on free loopback ports, run the suites through its Envoy, tear down."""
    stage_certs()
    build_seconds = build(engine, Project(), bases)
    refs = [f"shop/{name}:dev" for name in SERVICE_IMAGES]
    sizes = image_sizes(engine, refs)
    print(f"built every image in {build_seconds:.0f} s ({engine.name}, bases: {bases})")
    for ref, size in sizes.items():
        print(f"  {ref:34} {size / 1e6:7.1f} MB")
    ports = {"SHOP_PUBLIC_PORT": _free_port(), "SHOP_INTERNAL_PORT": _free_port(), "SHOP_ADMIN_PORT": _free_port()}
    project = Project(
        name=f"shoptest{os.getpid()}",
        files=(COMPOSE_FILE, TEST_OVERRIDE),
        env={k: str(v) for k, v in ports.items()},
    )
    edge_file = WORK / f"{project.name}-edge.json"
    try:
        up(engine, project)
        edge_file.parent.mkdir(parents=True, exist_ok=True)
        edge_file.write_text(json.dumps(edge_of(engine, project), indent=2))
        command = [
            str(VENV_BIN / "pytest"),
            "-q",
            "tests/contract",
            "tests/e2e",
            "tests/containers",
            f"--edge={edge_file}",
            *pytest_args,
        ]
        sys.stdout.flush()
        return subprocess.run(command, cwd=ROOT, env=engine.environ(), check=False).returncode
    finally:
        down(engine, project, volumes=True)
        edge_file.unlink(missing_ok=True)
