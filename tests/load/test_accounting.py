"""How the load generator counts calls, checks its target and reads its flags (load/client.py, load/plan.py).

No Locust here (it would patch this process for gevent): the Recorder is
given a function that collects the request events Locust would receive.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from load.client import Connection, Recorder, Target, TargetError, WrongAnswer, order_outcome
from load.plan import Plan, PlanError
from shop.orders.v1 import order_service_pb2 as orders_pb


class StatusError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A gRPC error as a call raises it: a code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None:
        return None

    def trailing_metadata(self) -> None:
        return None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def recorder(events: list[dict[str, Any]]) -> Recorder:
    return Recorder(lambda **event: events.append(event))


def test_a_grpc_error_is_a_failure_under_the_method_with_its_status_code(
    recorder: Recorder, events: list[dict[str, Any]]
) -> None:
    with recorder.rpc("OrderService/GetOrder"):
        raise StatusError(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")
    (event,) = events
    assert (event["request_type"], event["name"]) == ("grpc", "OrderService/GetOrder")
    assert repr(event["exception"]) == "UNAVAILABLE: no healthy upstream"


def test_an_answer_asked_for_is_a_success_in_its_own_row(recorder: Recorder, events: list[dict[str, Any]]) -> None:
    with recorder.rpc("CatalogService/GetProduct", expected={grpc.StatusCode.NOT_FOUND: "NOT_FOUND unknown id"}):
        raise StatusError(grpc.StatusCode.NOT_FOUND, "no product sku-x")
    with recorder.rpc("CatalogService/GetProduct", expected={grpc.StatusCode.NOT_FOUND: "NOT_FOUND unknown id"}):
        raise StatusError(grpc.StatusCode.INTERNAL, "boom")
    found, other = events
    assert (found["name"], found["exception"]) == ("CatalogService/GetProduct [NOT_FOUND unknown id]", None)
    assert other["name"] == "CatalogService/GetProduct"
    assert repr(other["exception"]) == "INTERNAL: boom"


def test_a_wrong_answer_is_a_failure_under_the_method_even_with_an_outcome(
    recorder: Recorder, events: list[dict[str, Any]]
) -> None:
    with recorder.rpc("OrderService/PlaceOrder") as rpc:
        rpc.outcome = "FAILED OUT_OF_STOCK"
        raise WrongAnswer("PlaceOrder ended FAILED INTERNAL")
    with recorder.rpc("OrderService/PlaceOrder") as rpc:
        rpc.outcome = "FAILED OUT_OF_STOCK"
        rpc.response_length = 42
    failed, counted_apart = events
    assert failed["name"] == "OrderService/PlaceOrder"
    assert repr(failed["exception"]) == "PlaceOrder ended FAILED INTERNAL"
    assert (counted_apart["name"], counted_apart["exception"]) == (
        "OrderService/PlaceOrder [FAILED OUT_OF_STOCK]",
        None,
    )
    assert counted_apart["response_length"] == 42


def test_anything_else_raised_is_not_counted(recorder: Recorder, events: list[dict[str, Any]]) -> None:
    with pytest.raises(KeyError), recorder.rpc("InventoryService/GetStock"):
        raise KeyError("a bug in the locustfile")
    assert events == []


def order(state: int, reason: int = 0, request_id: str = "r1", message: str = "") -> orders_pb.Order:
    return orders_pb.Order(
        order_id="o1", request_id=request_id, state=state, failure_reason=reason, failure_message=message
    )


def test_orders_count_by_outcome_and_only_expected_reasons_succeed() -> None:
    good_card = {"CONFIRMED", "OUT_OF_STOCK"}
    assert order_outcome(order(orders_pb.ORDER_STATE_CONFIRMED), "r1", good_card) is None
    out = order(orders_pb.ORDER_STATE_FAILED, orders_pb.ORDER_FAILURE_REASON_OUT_OF_STOCK)
    assert order_outcome(out, "r1", good_card) == "FAILED OUT_OF_STOCK"
    declined = order(orders_pb.ORDER_STATE_FAILED, orders_pb.ORDER_FAILURE_REASON_CARD_DECLINED)
    assert order_outcome(declined, "r1", {"CARD_DECLINED"}) == "FAILED CARD_DECLINED"
    with pytest.raises(WrongAnswer, match="FAILED CARD_DECLINED"):
        order_outcome(declined, "r1", good_card)  # a good card declined
    with pytest.raises(WrongAnswer, match=r"ended CONFIRMED$"):
        order_outcome(order(orders_pb.ORDER_STATE_CONFIRMED), "r1", {"CARD_DECLINED"})  # a declined card accepted
    down = order(
        orders_pb.ORDER_STATE_COMPENSATING,
        orders_pb.ORDER_FAILURE_REASON_DEPENDENCY_UNAVAILABLE,
        message="payments down",
    )
    with pytest.raises(WrongAnswer, match="COMPENSATING DEPENDENCY_UNAVAILABLE: payments down"):
        order_outcome(down, "r1", good_card)
    with pytest.raises(WrongAnswer, match="request_id"):
        order_outcome(order(orders_pb.ORDER_STATE_CONFIRMED, request_id="r2"), "r1", good_card)


def test_targets_on_loopback_pass_and_others_are_refused_unless_allowed() -> None:
    for text in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
        Target.parse(text).check_local()
    assert Target.parse("[::1]:8080").address == "[::1]:8080"
    remote = Target.parse("192.0.2.10:8080")
    with pytest.raises(TargetError, match="not loopback"):
        remote.check_local()
    remote.check_local(allow_remote=True)
    for bad in ("8080", "localhost", "localhost:http", "localhost:70000"):
        with pytest.raises(TargetError, match="HOST:PORT"):
            Target.parse(bad)


class Options:
    def __init__(self, **values: str) -> None:
        self.__dict__.update(values)


def test_the_default_plan_and_its_weights() -> None:
    plan = Plan.from_options(Options())
    assert dict(plan.mix) == {"browse": 55, "stock": 20, "checkout": 15, "orders": 10}
    journeys = {name: (lambda name=name: name) for name in plan.mix}
    tasks = plan.task_list(journeys)
    assert len(tasks) == 100
    assert sum(1 for task in tasks if task() == "checkout") == 15


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mix": "browse=1,shopping=2"}, "--mix"),
        ({"mix": "browse=0"}, "weight of 0"),
        ({"think_seconds": "3-1"}, "--think-seconds"),
        ({"declined_share": "1.5"}, "--declined-share"),
        ({"declined_share": "0.6", "out_of_stock_share": "0.6"}, "add up to 1.2"),
        ({"watch_seconds": "0"}, "--watch-seconds"),
    ],
)
def test_a_bad_flag_is_refused_naming_it(values: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        Plan.from_options(Options(**values))


def test_a_users_token_is_renewed_once_half_its_lifetime_has_passed() -> None:
    signed: list[int] = []

    def sign_in() -> str:
        signed.append(1)
        return f"token-{len(signed)}"

    with grpc.insecure_channel("127.0.0.1:1") as channel:  # never connected: channels are lazy
        lasting = Connection(channel, sign_in, token_ttl_seconds=3600)
        assert lasting.metadata == (("authorization", "Bearer token-1"),)
        assert lasting.metadata == (("authorization", "Bearer token-1"),)
        expiring = Connection(channel, sign_in, token_ttl_seconds=0)
        assert expiring.metadata == (("authorization", "Bearer token-2"),)
        assert expiring.metadata == (("authorization", "Bearer token-3"),)
