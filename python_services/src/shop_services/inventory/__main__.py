"""`python -m shop_services.inventory`: run the Python inventory until SIGTERM.

Configuration (docs/conventions.md):

- SHOP_LISTEN_ADDR: host:port, default 127.0.0.1:50072 (50052 is the stack's
  inventory port, which the Node implementation takes by default);
- SHOP_DB_PATH: default inventory.db in the working directory;
- SHOP_SEED_FILE: default data/products.json in the repository (looked for
  in the working directory and then in each of its parents);
- SHOP_INVENTORY_SCHEMA: default data/inventory_schema.sql in the repository
  (looked for the same way);
- SHOP_RESERVATION_TTL_SECONDS: more than zero, fractions allowed, default 900;
- SHOP_SHUTDOWN_GRACE_SECONDS: default 10;
- SHOP_LOG_LEVEL: debug, info, warn or error, default info.

Every log line carries "impl": "python", so a mixed deployment tells the
implementations apart.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from dataclasses import dataclass

from shop_services.common.config import ConfigError, env_float, env_log_level, env_repo_file, env_str
from shop_services.common.logs import setup_logging
from shop_services.common.server import serve, service_main
from shop_services.common.tls import Tls, tls_from_env
from shop_services.inventory.service import create_inventory_server

DEFAULT_ADDR = "127.0.0.1:50072"
DEFAULT_DB_PATH = "inventory.db"
SEED_FILE = "data/products.json"
SCHEMA_FILE = "data/inventory_schema.sql"
DEFAULT_TTL_SECONDS = 900.0
DEFAULT_GRACE_SECONDS = 10.0
IMPL = "python"


@dataclass(frozen=True)
class Config:
    address: str
    db_path: str
    seed_file: str
    schema_file: str
    reservation_ttl_seconds: float
    grace_seconds: float
    log_level: str
    tls: Tls | None

    @classmethod
    def from_env(cls) -> Config:
        """Read the environment; raise ConfigError naming a malformed variable."""
        address = env_str("SHOP_LISTEN_ADDR", DEFAULT_ADDR)
        if not re.fullmatch(r".+:\d+", address):
            raise ConfigError(f"environment variable SHOP_LISTEN_ADDR must be host:port, got {address!r}")
        ttl = env_float("SHOP_RESERVATION_TTL_SECONDS", DEFAULT_TTL_SECONDS)
        if ttl <= 0:
            raise ConfigError(f"environment variable SHOP_RESERVATION_TTL_SECONDS must be more than zero, got {ttl}")
        return cls(
            address=address,
            db_path=env_str("SHOP_DB_PATH", DEFAULT_DB_PATH),
            seed_file=env_repo_file("SHOP_SEED_FILE", SEED_FILE),
            schema_file=env_repo_file("SHOP_INVENTORY_SCHEMA", SCHEMA_FILE),
            reservation_ttl_seconds=ttl,
            grace_seconds=env_float("SHOP_SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS),
            log_level=env_log_level(),
            tls=tls_from_env(),
        )


async def run(config: Config) -> int:
    logger = setup_logging("inventory", config.log_level, impl=IMPL)
    try:
        server = await create_inventory_server(
            config.address,
            config.db_path,
            seed_file=config.seed_file,
            schema_file=config.schema_file,
            reservation_ttl_seconds=config.reservation_ttl_seconds,
            logger=logger,
            tls=config.tls,
        )
    except (OSError, sqlite3.Error, ValueError) as exc:
        # OSError covers a taken port (the message names the address) and an
        # unreadable schema or seed file; ValueError a malformed seed file or
        # a database from a newer schema.
        logger.error(
            f"start failed: {exc}",
            extra={"addr": config.address, "db_path": config.db_path, "error": str(exc)},
        )
        return 1
    await serve(server, logger, config.grace_seconds)
    return 0


def main() -> int:
    return service_main("inventory", Config.from_env, run, impl=IMPL)


if __name__ == "__main__":
    sys.exit(main())
