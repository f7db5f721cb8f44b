"""Secrets at rest: never plaintext in the database, and keys rotate without loss."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, text, update

from models import SecretBox, Tenant, WebhookEvent, utcnow
from tests.factories import SHOP, create_tenant, delivery

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
SECRET = "store-webhook-secret-0123456789"
REFRESH = "shprt_refresh-0123456789"


async def cli(backend, tmp_path, *args: str, keys: str, **env: str) -> tuple[int, str]:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": backend.url,
        "ENCRYPTION_KEYS": keys,
        "SECRET_KEY": "x",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "receiver.cli", *args,
        cwd=tmp_path, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def raw_tenant_columns(backend) -> str:
    async with backend.sessions() as session:
        rows = await session.execute(text("SELECT * FROM tenants"))
        return repr([tuple(row) for row in rows])


async def test_key_rotation_round_trip(backend, tmp_path):
    code, output = await cli(
        backend, tmp_path,
        "tenants", "add", "--shop", SHOP, "--webhook-secret", SECRET,
        "--access-token", TOKEN, "--refresh-token", REFRESH, "--token-expires-in", "3600",
        keys=OLD_KEY,
    )  # fmt: skip
    assert code == 0, output
    stored = await raw_tenant_columns(backend)
    for plaintext in (TOKEN, SECRET, REFRESH):
        assert plaintext not in stored  # the raw columns hold no plaintext

    code, output = await cli(backend, tmp_path, "keys", "rotate", keys=f"{NEW_KEY},{OLD_KEY}")
    assert code == 0, output
    assert "re-encrypted 3 value(s) of 1 store(s)" in output
    for value in (TOKEN, SECRET, REFRESH):
        assert value not in output

    # The old key is gone: everything still decrypts with the new key alone...
    new_only = SecretBox([NEW_KEY])
    async with backend.sessions() as session:
        tenant = (await session.scalars(select(Tenant))).one()
    assert new_only.decrypt(tenant.access_token_encrypted) == TOKEN
    assert new_only.decrypt(tenant.refresh_token_encrypted) == REFRESH
    assert SECRET in new_only.decrypt(tenant.webhook_secrets_encrypted)
    # ...and nothing decrypts with the old key alone any more.
    old_only = SecretBox([OLD_KEY])
    with pytest.raises(InvalidToken):
        old_only.decrypt(tenant.access_token_encrypted)
    # The service, started with the new key only, still uses the secrets.
    code, output = await cli(backend, tmp_path, "tenants", "list", keys=NEW_KEY)
    assert code == 0
    assert "yes" in output
    assert TOKEN not in output


async def test_rotation_without_the_old_key_changes_nothing(backend, tmp_path):
    code, _ = await cli(
        backend, tmp_path, "tenants", "add", "--shop", SHOP, "--access-token", TOKEN, keys=OLD_KEY
    )
    assert code == 0
    before = await raw_tenant_columns(backend)
    code, output = await cli(backend, tmp_path, "keys", "rotate", keys=NEW_KEY)
    assert code != 0
    assert "cannot be decrypted" in output
    # One line that says what to do: put the old key back, or set the value again.
    assert "add that key back, first in the list" in output
    assert f"tenants add --shop {SHOP}" in output
    assert TOKEN not in output
    assert await raw_tenant_columns(backend) == before


async def test_payload_retention_empties_old_payloads_but_keeps_failed_ones(
    backend, served, http, tmp_path
):
    await create_tenant(backend.sessions)
    for topic, payload in (("orders/create", None), ("orders/create", {"id": 2**64})):
        body, headers = delivery(
            topic, payload if payload is None else {**payload, "updated_at": "2026-01-01T00:00:00Z"}
        )
        assert (await http.post(served.webhook_url, content=body, headers=headers)).is_success
    body, headers = delivery("products/create")
    assert (await http.post(served.webhook_url, content=body, headers=headers)).is_success
    async with backend.sessions() as session, session.begin():
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.topic == "orders/create")
            .values(received_at=utcnow() - timedelta(days=40))
        )
    code, output = await cli(
        backend, tmp_path, "events", "prune", keys=OLD_KEY, PAYLOAD_RETENTION_DAYS="30"
    )
    assert code == 0, output
    assert "emptied the payloads of 1 event(s)" in output
    async with backend.sessions() as session:
        events = {
            (event.topic, event.status): event
            for event in await session.scalars(select(WebhookEvent))
        }
    assert events[("orders/create", "processed")].payload is None
    assert events[("orders/create", "failed")].payload is not None  # replay still possible
    assert events[("products/create", "processed")].payload is not None  # not old enough
