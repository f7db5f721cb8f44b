"""Tables, engine, session factory, upsert helpers and migrations. Imports nothing of ours."""

from models.encryption import SecretBox
from models.engine import create_engine, create_session_factory, is_sqlite
from models.tables import (
    SHOP_DATA_MODELS,
    ApiToken,
    Base,
    ComplianceRequest,
    Customer,
    Order,
    Product,
    ShopRecord,
    SyncJob,
    Tenant,
    WebhookEvent,
    utcnow,
)

__all__ = [
    "SHOP_DATA_MODELS",
    "ApiToken",
    "Base",
    "ComplianceRequest",
    "Customer",
    "Order",
    "Product",
    "SecretBox",
    "ShopRecord",
    "SyncJob",
    "Tenant",
    "WebhookEvent",
    "create_engine",
    "create_session_factory",
    "is_sqlite",
    "utcnow",
]
