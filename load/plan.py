"""The traffic mix: Locust command-line flags (also shown in the web UI's form) and their validation.

Every flag is a string so that the web UI can hand back whatever a person
typed, and `Plan.from_options` says clearly what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

JOURNEYS = ("browse", "stock", "checkout", "orders")

DEFAULTS = {
    "mix": "browse=55,stock=20,checkout=15,orders=10",
    "think_seconds": "1-3",
    "declined_share": "0.10",
    "out_of_stock_share": "0.10",
    "timeout_retry_share": "0.05",
    "unknown_id_share": "0.10",
    "watch_share": "0.30",
    "watch_seconds": "5-20",
}

HELP = {
    "mix": "journey weights, JOURNEY=WEIGHT,...: browse, stock, checkout, orders (a journey left out gets 0)",
    "think_seconds": "pause between two journeys of one user, LOW-HIGH seconds",
    "declined_share": "share of checkouts paid with a card that is declined",
    "out_of_stock_share": "share of checkouts asking for more units of one line than are available",
    "timeout_retry_share": "share of checkouts that time out on the client and retry with the same request_id",
    "unknown_id_share": "share of browse journeys that also open a product id the shop does not have",
    "watch_share": "share of stock journeys that then hold a WatchStock stream",
    "watch_seconds": "how long a WatchStock stream is held, LOW-HIGH seconds",
}


class PlanError(ValueError):
    """A flag's value cannot be used; the message names the flag."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: Any) -> None:
    """Register the flags on Locust's parser (events.init_command_line_parser).

    On the parser itself, not a group: only its add_argument knows include_in_web_ui."""
    for name, default in DEFAULTS.items():
        parser.add_argument(flag(name), default=default, help=f"{HELP[name]} (default {default})")
    parser.add_argument(
        "--allow-remote-target",
        action="store_true",
        default=False,
        include_in_web_ui=False,
        help="allow a --host that is not loopback (by default only the local edge is loaded)",
    )


def _range(name: str, text: str) -> tuple[float, float]:
    low, sep, high = str(text).partition("-")
    try:
        bounds = (float(low), float(high if sep else low))
    except ValueError:
        raise PlanError(f"{flag(name)} {text!r} is not LOW-HIGH seconds (for example 1-3)") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise PlanError(f"{flag(name)} {text!r}: need 0 <= LOW <= HIGH")
    return bounds


def _share(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PlanError(f"{flag(name)} {text!r} is not a number between 0 and 1") from None
    if not 0 <= value <= 1:
        raise PlanError(f"{flag(name)} {text!r} is not between 0 and 1")
    return value


def _mix(text: str) -> dict[str, int]:
    weights = dict.fromkeys(JOURNEYS, 0)
    for part in str(text).split(","):
        journey, sep, weight = part.strip().partition("=")
        if not sep or journey not in weights or not weight.strip().isdigit():
            raise PlanError(f"--mix {text!r}: each part is JOURNEY=WEIGHT with JOURNEY one of {', '.join(JOURNEYS)}")
        weights[journey] = int(weight)
    if not any(weights.values()):
        raise PlanError(f"--mix {text!r} gives every journey a weight of 0")
    return weights


@dataclass(frozen=True)
class Plan:
    """What the users do, and how often."""

    mix: Mapping[str, int]
    think_seconds: tuple[float, float]
    declined_share: float
    out_of_stock_share: float
    timeout_retry_share: float
    unknown_id_share: float
    watch_share: float
    watch_seconds: tuple[float, float]

    @classmethod
    def from_options(cls, options: Any) -> Plan:
        def get(name: str) -> str:
            value = getattr(options, name, None)
            return DEFAULTS[name] if value is None else str(value)

        plan = cls(
            mix=_mix(get("mix")),
            think_seconds=_range("think_seconds", get("think_seconds")),
            declined_share=_share("declined_share", get("declined_share")),
            out_of_stock_share=_share("out_of_stock_share", get("out_of_stock_share")),
            timeout_retry_share=_share("timeout_retry_share", get("timeout_retry_share")),
            unknown_id_share=_share("unknown_id_share", get("unknown_id_share")),
            watch_share=_share("watch_share", get("watch_share")),
            watch_seconds=_range("watch_seconds", get("watch_seconds")),
        )
        checkout = plan.declined_share + plan.out_of_stock_share + plan.timeout_retry_share
        if checkout > 1:
            raise PlanError(
                f"--declined-share, --out-of-stock-share and --timeout-retry-share add up to {checkout:g}, more than 1"
            )
        if plan.watch_seconds[0] <= 0 and plan.watch_share > 0:
            raise PlanError("--watch-seconds must be above 0 while --watch-share is above 0")
        return plan

    def task_list(self, journeys: Mapping[str, Callable[..., None]]) -> list[Callable[..., None]]:
        """Locust's `tasks` list: each journey repeated as often as its weight."""
        return [journeys[name] for name, weight in self.mix.items() for _ in range(weight)]
