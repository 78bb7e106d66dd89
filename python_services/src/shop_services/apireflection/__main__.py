"""Run the API-wide reflection server: `python -m shop_services.apireflection`.

Environment: SHOP_LISTEN_ADDR (default 127.0.0.1:50055), SHOP_DESCRIPTOR_SET
(default protos/gen/shop_api.binpb in the repository),
SHOP_SHUTDOWN_GRACE_SECONDS, SHOP_LOG_LEVEL.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool

from shop_services.common.config import REPO_ROOT, env_float, env_str
from shop_services.common.logs import setup_logging
from shop_services.common.server import Running, create_server, serve


def load_api(path: Path) -> tuple[descriptor_pool.DescriptorPool, list[str]]:
    """A pool holding every file in the descriptor set, and the shop's service names."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"descriptor set {path} is missing; run `make protos`") from exc
    pool = descriptor_pool.DescriptorPool()
    services: list[str] = []
    for file in files.file:  # protoc writes dependencies before dependents
        pool.Add(file)
        if file.package.startswith("shop."):
            services.extend(f"{file.package}.{service.name}" for service in file.service)
    if not services:
        raise ValueError(f"{path} describes no shop service; run `make protos`")
    return pool, sorted(services)


async def create_reflection_server(address: str, descriptor_set: Path, logger: logging.Logger) -> Running:
    """Bind a server answering reflection for the whole API; SERVING on return."""
    pool, services = load_api(descriptor_set)
    return await create_server(address, [], logger, reflection_pool=pool, reflected=services)


async def main() -> None:
    logger = setup_logging("reflection", env_str("SHOP_LOG_LEVEL", "info"))
    address = env_str("SHOP_LISTEN_ADDR", "127.0.0.1:50055")
    descriptor_set = Path(env_str("SHOP_DESCRIPTOR_SET", str(REPO_ROOT / "protos/gen/shop_api.binpb")))
    running = await create_reflection_server(address, descriptor_set, logger)
    await serve(running, logger, env_float("SHOP_SHUTDOWN_GRACE_SECONDS", 10.0))


if __name__ == "__main__":
    asyncio.run(main())
