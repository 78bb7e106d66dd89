"""`python -m shop_services.payments`: run the payments service until SIGTERM.

Configuration (docs/conventions.md): SHOP_LISTEN_ADDR (default
127.0.0.1:50053), SHOP_DB_PATH (default payments.db in the working directory),
SHOP_SHUTDOWN_GRACE_SECONDS (default 10) and SHOP_LOG_LEVEL (default info).
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass

from shop_services.common.config import env_float, env_log_level, env_str
from shop_services.common.logs import setup_logging
from shop_services.common.server import serve, service_main
from shop_services.common.tls import Tls, tls_from_env
from shop_services.payments.service import create_payments_server

DEFAULT_ADDR = "127.0.0.1:50053"
DEFAULT_DB_PATH = "payments.db"
DEFAULT_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Config:
    address: str
    db_path: str
    grace_seconds: float
    log_level: str
    tls: Tls | None

    @classmethod
    def from_env(cls) -> Config:
        """Read the environment; raise ConfigError naming a malformed variable."""
        return cls(
            address=env_str("SHOP_LISTEN_ADDR", DEFAULT_ADDR),
            db_path=env_str("SHOP_DB_PATH", DEFAULT_DB_PATH),
            grace_seconds=env_float("SHOP_SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS),
            log_level=env_log_level(),
            tls=tls_from_env(),
        )


async def run(config: Config) -> int:
    logger = setup_logging("payments", config.log_level)
    try:
        server = await create_payments_server(config.address, config.db_path, logger, tls=config.tls)
    except sqlite3.Error as exc:
        logger.error("cannot open the database", extra={"db_path": config.db_path, "error": str(exc)})
        return 1
    except OSError as exc:
        logger.error("cannot listen", extra={"addr": config.address, "error": str(exc)})
        return 1
    await serve(server, logger, config.grace_seconds)
    return 0


def main() -> int:
    return service_main("payments", Config.from_env, run)


if __name__ == "__main__":
    sys.exit(main())
