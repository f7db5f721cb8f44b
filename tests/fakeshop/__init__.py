"""fakeshop: a Shopify Admin API simulator for tests and benchmarks.

See ``tests/fakeshop/README.md``. The main entry points::

    from tests.fakeshop import FakeShopServer, FakeStore, Fault, ManualClock

    store = FakeStore("demo.myshopify.com", seed=1, orders=1000)
    with FakeShopServer(store) as server:
        url = server.graphql_url()  # POST with X-Shopify-Access-Token: store.access_token
"""

from __future__ import annotations

from .app import API_VERSION, FakeShopApp
from .clock import Clock, ManualClock, SystemClock
from .executor import FieldError
from .faults import Fault
from .hooks import GraphQLRequest
from .rest import RestRenderer
from .schema import SCHEMA_VERSION, admin_schema, check_document
from .select import select
from .server import FakeShopServer
from .store import FakeStore, Stats
from .tokens import TokenRegistry
from .webhooks import WebhookEmitter, WebhookEvent

__all__ = [
    "API_VERSION",
    "SCHEMA_VERSION",
    "Clock",
    "FakeShopApp",
    "FakeShopServer",
    "FakeStore",
    "Fault",
    "FieldError",
    "GraphQLRequest",
    "ManualClock",
    "RestRenderer",
    "Stats",
    "SystemClock",
    "TokenRegistry",
    "WebhookEmitter",
    "WebhookEvent",
    "admin_schema",
    "check_document",
    "select",
]
