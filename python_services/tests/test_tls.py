"""Mutual TLS in the bootstrap (common/tls.py, common/server.py).

With the three TLS files configured, a server answers only callers holding a
certificate from its CA: plaintext, TLS without a client certificate and a
certificate from another CA are all refused at the handshake. The
certificates come from the repository's own CA tool (`make certs`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop_services.common.config import ConfigError
from shop_services.common.server import create_server
from shop_services.common.tls import CA_VAR, CERT_VAR, KEY_VAR, Tls, tls_from_env

REPO = Path(__file__).resolve().parents[2]


def make_certs(run_dir: Path) -> Callable[[str], bytes]:
    """A CA and every identity's certificate in run_dir/certs, by file name."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "deploy")}
    subprocess.run(
        [sys.executable, "-m", "shopstack", "certs", "--run-dir", str(run_dir)],
        check=True,
        env=env,
        capture_output=True,
    )
    return lambda name: (run_dir / "certs" / name).read_bytes()


async def _health(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    channel = (
        grpc.aio.insecure_channel(address) if credentials is None else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def test_a_tls_server_serves_only_callers_with_a_certificate_from_its_ca(tmp_path: Path) -> None:
    shop = make_certs(tmp_path / "shop")
    stranger = make_certs(tmp_path / "stranger")
    tls = Tls(cert=shop("payments.crt"), key=shop("payments.key"), ca=shop("ca.crt"))
    running = await create_server("127.0.0.1:0", [], logging.getLogger("test.tls"), tls=tls)
    address = f"127.0.0.1:{running.port}"
    try:
        operator = grpc.ssl_channel_credentials(shop("ca.crt"), shop("operator.key"), shop("operator.crt"))
        assert await _health(address, operator) == "SERVING"
        refused = {
            "plaintext": None,
            "no client certificate": grpc.ssl_channel_credentials(shop("ca.crt")),
            "a certificate from another CA": grpc.ssl_channel_credentials(
                shop("ca.crt"), stranger("operator.key"), stranger("operator.crt")
            ),
        }
        for what, credentials in refused.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(address, credentials)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, f"{what}: {caught.value}"
    finally:
        await running.stop(0)


def test_tls_needs_all_three_files_or_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (CERT_VAR, KEY_VAR, CA_VAR):
        monkeypatch.delenv(name, raising=False)
    assert tls_from_env() is None
    monkeypatch.setenv(CERT_VAR, str(tmp_path / "x.crt"))
    with pytest.raises(ConfigError, match=KEY_VAR):
        tls_from_env()
    monkeypatch.setenv(KEY_VAR, str(tmp_path / "x.key"))
    monkeypatch.setenv(CA_VAR, str(tmp_path / "ca.crt"))
    with pytest.raises(ConfigError, match="cannot read"):
        tls_from_env()
