"""The orders service: PlaceOrder's saga across catalog, inventory and payments.

- store.py: the SQLite database and durable saga log;
- clients.py: one channel per dependency and the call helper;
- saga.py: the steps and their compensation;
- coordinator.py: the Coordinator, which owns every saga task and the recovery
  loop;
- service.py: the OrderService servicer and create_orders_server();
- __main__.py: ``python -m shop_services.orders``.
"""

from shop_services.orders.clients import Dependencies
from shop_services.orders.saga import SagaSettings
from shop_services.orders.service import OrdersServer, create_orders_server

__all__ = ["Dependencies", "OrdersServer", "SagaSettings", "create_orders_server"]
