"""The Python implementation of shop.inventory.v1.InventoryService.

Swappable with every other implementation of the contract: the same RPCs and
errors (protos/shop/inventory/v1/inventory_service.proto, held to
tests/contract/test_inventory.py), the same settings (docs/conventions.md) and
the same database layout (data/inventory_schema.sql), so two of them can even
run on one database file at once. Start it with
`python -m shop_services.inventory`; tests use create_inventory_server.
"""

from shop_services.inventory.service import (
    SERVICE_NAME,
    InventoryServer,
    InventoryService,
    create_inventory_server,
)

__all__ = ["SERVICE_NAME", "InventoryServer", "InventoryService", "create_inventory_server"]
