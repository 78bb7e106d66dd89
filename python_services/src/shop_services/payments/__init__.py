"""The payments service: shop.payments.v1.PaymentService with its own SQLite database.

Start it with `python -m shop_services.payments`; tests use create_payments_server.
"""

from shop_services.payments.service import SERVICE_NAME, PaymentService, PaymentsServer, create_payments_server

__all__ = ["SERVICE_NAME", "PaymentService", "PaymentsServer", "create_payments_server"]
