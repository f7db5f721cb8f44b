"""Serving the simulator: in-process on a background thread for tests, like
``tests/conftest.py``'s ``ServedApp``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

import uvicorn

from .app import API_VERSION, FakeShopApp
from .store import FakeStore


class FakeShopServer:
    """uvicorn on a loopback port of its own, serving ``stores``.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). The socket is listening
    before the server thread starts, so requests sent right away wait in the backlog: no
    readiness polling.
    """

    def __init__(
        self,
        stores: FakeStore | Iterable[FakeStore] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        if stores is None:
            stores = [FakeStore()]
        elif isinstance(stores, FakeStore):
            stores = [stores]
        self.app = FakeShopApp(stores)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app, log_level=log_level, lifespan="off", access_log=False, timeout_keep_alive=30
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="fakeshop"
        )
        self._started = False

    # -- lifecycle --

    def start(self) -> FakeShopServer:
        if not self._started:
            self._started = True
            self.thread.start()
        return self

    def stop(self) -> None:
        if self._started:
            self.server.should_exit = True
            self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> FakeShopServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses --

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_base_url_template(self) -> str:
        """A value for ``SHOPIFY_ADMIN_BASE_URL``: the shop goes in the path."""
        return f"{self.base_url}/{{shop}}/admin/api/{{version}}"

    def admin_base_url(self, shop: str | None = None, version: str = API_VERSION) -> str:
        return self.admin_base_url_template.format(
            shop=self.store(shop).shop_domain, version=version
        )

    def graphql_url(self, shop: str | None = None, version: str = API_VERSION) -> str:
        return f"{self.admin_base_url(shop, version)}/graphql.json"

    def token_url(self, shop: str | None = None) -> str:
        return f"{self.base_url}/{self.store(shop).shop_domain}/admin/oauth/access_token"

    # -- stores --

    @property
    def stores(self) -> dict[str, FakeStore]:
        return self.app.stores

    def store(self, shop: str | None = None) -> FakeStore:
        """The store for ``shop`` (the only one when omitted)."""
        if shop is None:
            if len(self.app.stores) != 1:
                raise ValueError("several stores are served: name one")
            return next(iter(self.app.stores.values()))
        if not shop.endswith(".myshopify.com"):
            shop = f"{shop}.myshopify.com"
        return self.app.stores[shop]

    def add_store(self, store: FakeStore) -> FakeStore:
        self.app.add(store)
        return store
