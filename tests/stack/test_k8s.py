"""deploy/k8s/ against deploy/stack.toml, offline.

The committed tree must be what `make k8s-manifests` renders, every resource
must pass `kubernetes-validate --strict` (Kubernetes' own OpenAPI schemas:
wrong types and unknown fields), and what the schemas cannot see is checked
here: selectors that match the pods they mean, probes on grpc.health.v1 for
each service, one writer per SQLite database, and NetworkPolicies that allow
exactly the calls the architecture makes. `make k8s-check` puts the same
manifests through a real kube-apiserver.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from shopstack import k8s, topology

ROOT = topology.ROOT
K8S_DIR = ROOT / "deploy" / "k8s"
TOPOLOGY = topology.load()
CONF = k8s.settings()
GENERATED = k8s.manifests(TOPOLOGY, CONF)
VENV_BIN = Path(sys.executable).parent
OVERLAYS = {"base": ["base"], "canary": ["base", "overlays/canary"]}


def resource_files() -> list[Path]:
    """Every committed file that holds Kubernetes objects (not kustomize's own files or Envoy's)."""
    return sorted(
        p for p in K8S_DIR.rglob("*.yaml") if p.name != "kustomization.yaml" and "envoy-config" not in p.parts
    )


def objects(dirs: list[str]) -> list[dict[str, Any]]:
    found = []
    for d in dirs:
        for path in sorted((K8S_DIR / d).glob("*.yaml")):
            if path.name != "kustomization.yaml":
                found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def of_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is generated: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_the_committed_tree_is_what_the_generator_renders() -> None:
    committed = {str(p.relative_to(K8S_DIR)) for p in K8S_DIR.rglob("*.yaml")}
    stale = sorted(
        rel for rel, text in GENERATED.items() if not (K8S_DIR / rel).is_file() or (K8S_DIR / rel).read_text() != text
    )
    extra = sorted(committed - set(GENERATED))
    assert not stale and not extra, f"run `make k8s-manifests`: stale or missing {stale}, not generated {extra}"


def test_every_resource_passes_kubernetes_validate_strict() -> None:
    files = resource_files()
    assert len(files) >= len(TOPOLOGY.services) + 2
    result = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check above can fail: a misspelt field in a generated Deployment is refused."""
    impl = TOPOLOGY.impl_of("catalog")
    broken = k8s.deployment(impl, TOPOLOGY, CONF)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": impl.port}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "grpcc" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_selector_matches_the_pods_it_means(overlay: str) -> None:
    objs = objects(OVERLAYS[overlay])
    deployments = of_kind(objs, "Deployment")
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, d in deployments.items():
        assert matches(d["spec"]["selector"], pods[name]), name
        others = [o for o in pods if o != name and matches(d["spec"]["selector"], pods[o])]
        assert not others, f"Deployment {name}'s selector also takes {others}'s pods"
    for name, svc in of_kind(objs, "Service").items():
        selected = [d for d, labels in pods.items() if matches({"matchLabels": svc["spec"]["selector"]}, labels)]
        assert len(selected) == 1, f"Service {name} selects {selected}"
        container = deployments[selected[0]]["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names, name
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for name, obj in of_kind(objs, kind).items():
            if name == "default-deny":
                continue
            assert [
                d
                for d, labels in pods.items()
                if matches(obj["spec"]["podSelector" if kind == "NetworkPolicy" else "selector"], labels)
            ] == [name], (kind, name)


@pytest.mark.parametrize("name", sorted(TOPOLOGY.services))
def test_each_service_runs_its_stack_implementation_with_grpc_health_probes(name: str) -> None:
    impl = TOPOLOGY.impl_of(name)
    objs = objects(["base"])
    deployment = of_kind(objs, "Deployment")[impl.cluster]
    service = of_kind(objs, "Service")[impl.cluster]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"shop/{impl.cluster}:{CONF.image_tag}"
    assert container["ports"] == [{"name": "grpc", "containerPort": impl.port, "protocol": "TCP"}]
    assert {"name": "SHOP_LISTEN_ADDR", "value": f"0.0.0.0:{impl.port}"} in container["env"]
    # Headless, so Envoy's STRICT_DNS cluster sees every pod.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["port"] == impl.port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        grpc = container[probe]["grpc"]
        assert grpc["port"] == impl.port
        assert grpc.get("service", "") == ("" if name == "reflection" else TOPOLOGY.services[name].proto)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", [n for n in TOPOLOGY.services if k8s.stateful(n, CONF) and n != "reflection"])
def test_each_sqlite_database_has_one_writer_on_a_persistent_volume(name: str) -> None:
    impl = TOPOLOGY.impl_of(name)
    objs = objects(["base"])
    deployment = of_kind(objs, "Deployment")[impl.cluster]
    claim = of_kind(objs, "PersistentVolumeClaim")[f"{name}-data"]
    assert deployment["spec"]["replicas"] == 1
    # The old pod has closed the database before the new one opens it.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{name}-data"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "SHOP_DB_PATH", "value": f"/data/{name}.db"} in container["env"]
    expected = "ReadWriteOnce" if name == CONF.canary_service else "ReadWriteOncePod"
    assert claim["spec"]["accessModes"] == [expected]


@pytest.mark.parametrize("name", CONF.stateless)
def test_stateless_services_run_replicas_and_keep_one_through_a_drain(name: str) -> None:
    impl = TOPOLOGY.impl_of(name)
    objs = objects(["base"])
    assert of_kind(objs, "Deployment")[impl.cluster]["spec"]["replicas"] == CONF.replicas > 1
    assert of_kind(objs, "PodDisruptionBudget")[impl.cluster]["spec"]["minAvailable"] == 1
    assert f"{name}-data" not in of_kind(objs, "PersistentVolumeClaim")


def test_the_canary_is_a_second_deployment_on_the_shared_volume_with_envoy_weights() -> None:
    main = TOPOLOGY.impl_of(CONF.canary_service)
    canary = TOPOLOGY.services[CONF.canary_service].implementations[CONF.canary_impl]
    objs = objects(OVERLAYS["canary"])
    deployments = of_kind(objs, "Deployment")
    assert {main.cluster, canary.cluster} <= set(deployments)
    pod = deployments[canary.cluster]["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {f"{CONF.canary_service}-data"}
    # SQLite's locks hold between processes of one node: the canary runs beside the main pod.
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["labelSelector"], deployments[main.cluster]["spec"]["template"]["metadata"]["labels"])
    routes = yaml.safe_load((K8S_DIR / "overlays/canary/envoy-config/rds_public.yaml").read_text())
    proto = TOPOLOGY.services[CONF.canary_service].proto
    weights = set()
    for host in routes["resources"][0]["virtual_hosts"]:
        for route in host["routes"]:
            if route["match"].get("prefix", route["match"].get("path", "")).startswith(f"/{proto}/"):
                split = route.get("route", {}).get("weighted_clusters")
                if split:
                    weights.add(tuple(sorted((c["name"], c["weight"]) for c in split["clusters"])))
    assert weights == {tuple(sorted([(main.cluster, 100 - CONF.canary_weight), (canary.cluster, CONF.canary_weight)]))}
    clusters = yaml.safe_load((K8S_DIR / "overlays/canary/envoy-config/cds.yaml").read_text())
    assert {c["name"] for c in clusters["resources"]} >= {main.cluster, canary.cluster}


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str]
    ports: frozenset[int]


def _peer_allows(rule: dict[str, Any], key: str, pod: Pod | None, port: int) -> bool:
    """Does an ingress (key "from") or egress (key "to") rule admit this peer and port?"""
    ports = rule.get("ports")
    if ports and port not in {p["port"] for p in ports}:
        return False
    peers = rule.get(key)
    if not peers:
        return True
    for peer in peers:
        if "namespaceSelector" in peer:
            continue  # only DNS in kube-system is allowed that way
        if pod is not None and matches(peer["podSelector"], pod.labels):
            return True
    return False


def allowed(policies: list[dict[str, Any]], src: Pod | None, dst: Pod, port: int) -> bool:
    """NetworkPolicy semantics within the namespace: src None is a client outside it."""

    def direction_allows(pod: Pod, kind: str, key: str, peer: Pod | None) -> bool:
        selecting = [
            p for p in policies if kind in p["spec"]["policyTypes"] and matches(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True
        field = "ingress" if kind == "Ingress" else "egress"
        return any(_peer_allows(rule, key, peer, port) for p in selecting for rule in p["spec"].get(field, []))

    ingress = direction_allows(dst, "Ingress", "from", src)
    egress = src is None or direction_allows(src, "Egress", "to", dst)
    return ingress and egress


def _pods(objs: list[dict[str, Any]]) -> Iterator[Pod]:
    for name, d in of_kind(objs, "Deployment").items():
        container = d["spec"]["template"]["spec"]["containers"][0]
        yield Pod(
            name, d["spec"]["template"]["metadata"]["labels"], frozenset(p["containerPort"] for p in container["ports"])
        )


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_network_policies_allow_exactly_the_calls_of_the_architecture(overlay: str) -> None:
    objs = objects(OVERLAYS[overlay])
    policies = list(of_kind(objs, "NetworkPolicy").values())
    pods = {p.name: p for p in _pods(objs)}
    expected: set[tuple[str, str, int]] = {("client", "envoy", TOPOLOGY.public_port)}
    for name, svc in TOPOLOGY.services.items():
        if svc.depends_on:
            expected.add((TOPOLOGY.impl_of(name).cluster, "envoy", TOPOLOGY.internal_port))
    for pod in pods.values():
        if pod.name != "envoy":
            (port,) = pod.ports
            expected.add(("envoy", pod.name, port))
    actual = set()
    sources: list[Pod | None] = [None, *pods.values()]
    for src in sources:
        for dst in pods.values():
            if src is not None and src.name == dst.name:
                continue
            for port in dst.ports:
                if allowed(policies, src, dst, port):
                    actual.add(("client" if src is None else src.name, dst.name, port))
    assert actual == expected
