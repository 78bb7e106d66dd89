"""Fixtures of the security suite: the session stack, a second CA nobody
trusts, and raw (token-less) channels to the edge.

Every test here expects a refusal with an exact status, or proves the
allowed path right beside it, so a rule that stopped refusing fails a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from shopstack import pki
from shopstack.stack import Stack

CALL_TIMEOUT = 15.0


@pytest.fixture(scope="session")
def stranger(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> pki.Certs:
    """Another CA with the same identity names: what an attacker could make."""
    certs = pki.Certs(Path(tmp_path_factory.mktemp("stranger-ca")), stack.topology.security.trust_domain)
    pki.make_all(certs, stack.topology.identities())
    return certs


@pytest.fixture(scope="session")
def edge(stack: Stack) -> Iterator[grpc.Channel]:
    """The public listener over TLS, without any token: tests add their own."""
    channel = stack.public_channel()
    grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
    yield channel
    channel.close()


def rpc_error(call: object) -> grpc.RpcError:
    """Run call() and return the error it must raise."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return err
    raise AssertionError("the call succeeded; it must have been refused")


def describe(err: grpc.RpcError) -> str:
    return f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
