"""A web process out of database connections answers 503 quickly instead of hanging past
Shopify's 5-second limit, and recovers when connections free up."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from tests.conftest import ServedApp, settings_for
from tests.factories import create_tenant, delivery


async def test_exhausted_pool_is_a_quick_503_then_recovers(pg, http):
    await create_tenant(pg.sessions)
    with ServedApp(settings_for(pg.url, database_pool_size=1)) as served:
        async with pg.engine.connect() as blocker:
            # Hold the tenants table: the first delivery blocks on it holding the only connection.
            await blocker.execute(text("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE"))
            first_body, first_headers = delivery("orders/create")
            first = asyncio.create_task(
                http.post(served.webhook_url, content=first_body, headers=first_headers)
            )
            # Wait until the first request really holds the connection (it is waiting on the lock).
            for _ in range(200):
                waiting = await pg.engine.connect()
                try:
                    count = (
                        await waiting.execute(
                            text(
                                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                                "AND relation = 'tenants'::regclass"
                            )
                        )
                    ).scalar()
                finally:
                    await waiting.close()
                if count:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the first delivery never reached the database")
            body, headers = delivery("orders/create")
            started = time.perf_counter()
            second = await http.post(served.webhook_url, content=body, headers=headers)
            elapsed = time.perf_counter() - started
            assert second.status_code == 503
            assert second.headers["retry-after"]
            assert elapsed < 4.0  # Shopify gives up at 5 s
            await blocker.rollback()
        assert (await first).status_code == 200
        # Connections are free again: the same delivery Shopify retries is accepted.
        retried = await http.post(served.webhook_url, content=body, headers=headers)
        assert retried.status_code == 200
        assert retried.json()["status"] == "processed"
