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
    ReconcileRun,
    ShopRecord,
    SyncJob,
    Tenant,
    User,
    UserTenant,
    WebhookEvent,
    WebhookSubscription,
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
    "ReconcileRun",
    "SecretBox",
    "ShopRecord",
    "SyncJob",
    "Tenant",
    "User",
    "UserTenant",
    "WebhookEvent",
    "WebhookSubscription",
    "create_engine",
    "create_session_factory",
    "is_sqlite",
    "utcnow",
]
