"""Tables, engine, session factory, upsert helpers and migrations. Imports nothing of ours."""

from models.encryption import SecretBox
from models.engine import create_engine, create_session_factory, is_sqlite
from models.tables import (
    SHOP_DATA_MODELS,
    ApiToken,
    Base,
    ComplianceRequest,
    Customer,
    LoginThrottle,
    Order,
    Product,
    ShopRecord,
    SyncJob,
    Tenant,
    User,
    UserTenant,
    WebhookEvent,
    utcnow,
)

__all__ = [
    "SHOP_DATA_MODELS",
    "ApiToken",
    "Base",
    "ComplianceRequest",
    "Customer",
    "LoginThrottle",
    "Order",
    "Product",
    "SecretBox",
    "ShopRecord",
    "SyncJob",
    "Tenant",
    "User",
    "UserTenant",
    "WebhookEvent",
    "create_engine",
    "create_session_factory",
    "is_sqlite",
    "utcnow",
]
