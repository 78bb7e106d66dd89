"""`python -m shop_services.orders`: run the orders service until SIGTERM.

Configuration (docs/conventions.md):

- SHOP_LISTEN_ADDR: where to listen; default 127.0.0.1:50054 (port 0 picks one).
- SHOP_DB_PATH: the orders database; default orders.db in the working directory.
- SHOP_CATALOG_ADDR, SHOP_INVENTORY_ADDR, SHOP_PAYMENTS_ADDR: the saga's
  dependencies (Envoy's internal listener in the stack). Required: the service
  exits 2 naming the first one missing.
- SHOP_SHUTDOWN_GRACE_SECONDS: how long SIGTERM waits for in-flight calls and
  sagas; default 10. Sagas still running after it are finished by recovery on
  the next start.
- SHOP_LOG_LEVEL: debug, info, warn or error; default info.
- SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE, SHOP_TLS_CA_FILE: mutual TLS, for the
  server and for the calls to the dependencies (common/tls.py).

The saga's knobs (see saga.py):

- SHOP_STEP_TIMEOUT_SECONDS: the most one step's calls may take, retries
  included; default 5. A call that never reached its dependency is retried
  within it (clients.py).
- SHOP_RETRY_BACKOFF_SECONDS: the first pause before a retry (doubling, at
  most 0.5 s); default 0.1.
- SHOP_RECOVERY_INTERVAL_SECONDS: how often unfinished sagas (a compensation
  that could not get through, a saga left by a killed process) are driven
  again; default 5. The first pass runs at start-up.
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass

from shop_services.common.config import ConfigError, env_float, env_str
from shop_services.common.logs import setup_logging
from shop_services.common.server import serve, service_main
from shop_services.common.tls import Tls, tls_from_env
from shop_services.orders.clients import Dependencies
from shop_services.orders.saga import SagaSettings
from shop_services.orders.service import create_orders_server

DEFAULT_ADDR = "127.0.0.1:50054"
DEFAULT_DB_PATH = "orders.db"
DEFAULT_GRACE_SECONDS = 10.0
LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class Config:
    address: str
    db_path: str
    dependencies: Dependencies
    settings: SagaSettings
    grace_seconds: float
    log_level: str
    tls: Tls | None

    @classmethod
    def from_env(cls) -> Config:
        """Read the environment; raise ConfigError naming a missing or malformed variable."""
        log_level = env_str("SHOP_LOG_LEVEL", "info").lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"environment variable SHOP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        defaults = SagaSettings()
        step_timeout = env_float("SHOP_STEP_TIMEOUT_SECONDS", defaults.step_timeout)
        if step_timeout <= 0:
            raise ConfigError("environment variable SHOP_STEP_TIMEOUT_SECONDS must be positive")
        recovery_interval = env_float("SHOP_RECOVERY_INTERVAL_SECONDS", defaults.recovery_interval)
        if recovery_interval <= 0:
            raise ConfigError("environment variable SHOP_RECOVERY_INTERVAL_SECONDS must be positive")
        return cls(
            address=env_str("SHOP_LISTEN_ADDR", DEFAULT_ADDR),
            db_path=env_str("SHOP_DB_PATH", DEFAULT_DB_PATH),
            dependencies=Dependencies(
                catalog=env_str("SHOP_CATALOG_ADDR"),
                inventory=env_str("SHOP_INVENTORY_ADDR"),
                payments=env_str("SHOP_PAYMENTS_ADDR"),
            ),
            settings=SagaSettings(
                step_timeout=step_timeout,
                retry_backoff=env_float("SHOP_RETRY_BACKOFF_SECONDS", defaults.retry_backoff),
                recovery_interval=recovery_interval,
            ),
            grace_seconds=env_float("SHOP_SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS),
            log_level=log_level,
            tls=tls_from_env(),
        )


async def run(config: Config) -> int:
    logger = setup_logging("orders", config.log_level)
    try:
        server = await create_orders_server(
            config.address,
            config.db_path,
            config.dependencies,
            settings=config.settings,
            logger=logger,
            tls=config.tls,
        )
    except sqlite3.Error as exc:
        logger.error("cannot open the database", extra={"db_path": config.db_path, "error": str(exc)})
        return 1
    except OSError as exc:
        logger.error("cannot listen", extra={"addr": config.address, "error": str(exc)})
        return 1
    await serve(server.running, logger, config.grace_seconds, on_stopped=server.close)
    return 0


def main() -> int:
    return service_main("orders", Config.from_env, run)


if __name__ == "__main__":
    sys.exit(main())
