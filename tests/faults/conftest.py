"""Fixtures of the fault suites: a PRIVATE stack per module.

These tests stop, kill, freeze and slow processes, so each module builds its
own stack (make_stack from tests/conftest.py) in a temporary directory and
never touches the session stack the other suites share. After every test the
Envoy runtime faults are switched off and the stack must be healthy again, so
one test's damage never leaks into the next. A failing test's report carries
the last lines of every log of its private stack.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import make_stack  # tests/conftest.py: the one way to build a stack
from e2e.support import Shop
from shopstack.stack import Stack

_PRIVATE = pytest.StashKey[dict[str, Stack]]()


@pytest.fixture(scope="module")
def private_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if request.config.getoption("--target"):
        pytest.skip("--target given: the fault suites need their own stack")
    name = request.module.__name__.rsplit(".", 1)[-1]
    shop = make_stack(tmp_path_factory.mktemp(f"faults-{name}"))
    try:
        shop.up(timeout=120)
    except Exception:
        shop.down()
        raise
    request.config.stash.setdefault(_PRIVATE, {})[request.module.__name__] = shop
    yield shop
    shop.down()


@pytest.fixture(scope="module")
def shop(private_stack: Stack) -> Iterator[Shop]:
    with Shop.open(private_stack) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _restored(shop: Shop) -> Iterator[None]:
    """Faults off and every program healthy again after each test."""
    yield
    shop.reset_faults()
    for impl in shop.stack.running_impls():
        if shop.stack.pid_of(impl.cluster) is None:
            shop.stack.start_program(impl.cluster)
    shop.stack.wait_healthy(90)
    shop.wait_routable()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    private = item.config.stash.get(_PRIVATE, {}).get(getattr(item.module, "__name__", ""))
    if report.failed and private is not None:
        programs = sorted(p.stem for p in private.logs_dir.glob("*.log") if p.stem != "supervisord")
        report.sections.append(("private stack logs", "\n".join(private.tail(p, 30) for p in programs)))
