"""The per-client stream cap's parts (common/limits.py); orders' tests run it in a server."""

from __future__ import annotations

import pytest

from shop_services.common.config import ConfigError
from shop_services.common.limits import client_of, max_streams_from_env


def test_a_client_is_its_customer_else_the_address_envoy_saw_else_its_own() -> None:
    both = (("x-shop-customer", "ada"), ("x-shop-client-address", "10.0.0.7"))
    assert client_of(both, "ipv4:127.0.0.1:5555") == "customer ada"
    assert client_of((("x-shop-client-address", "10.0.0.7"),), "ipv4:127.0.0.1:5555") == "address 10.0.0.7"
    assert client_of((), "ipv4:127.0.0.1:5555") == "address 127.0.0.1"
    assert client_of(None, "ipv6:[::1]:5555") == "address [::1]"


def test_max_streams_per_client_is_a_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP_MAX_STREAMS_PER_CLIENT", raising=False)
    assert max_streams_from_env() == 0
    monkeypatch.setenv("SHOP_MAX_STREAMS_PER_CLIENT", "32")
    assert max_streams_from_env() == 32
    for bad in ("-1", "2.5", "many"):
        monkeypatch.setenv("SHOP_MAX_STREAMS_PER_CLIENT", bad)
        with pytest.raises(ConfigError, match="SHOP_MAX_STREAMS_PER_CLIENT"):
            max_streams_from_env()
