"""Encryption at rest for access tokens and webhook secrets (Fernet, several keys for rotation)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "SecretBox", "generate_key", "missing_key_advice"]


def generate_key() -> str:
    return Fernet.generate_key().decode()


def missing_key_advice(
    what: str, shop_domain: str | None = None, option: str = "--access-token TOKEN"
) -> str:
    """What to do when no key in ENCRYPTION_KEYS opens a stored value (cryptography's bare
    InvalidToken reads as if Shopify had refused an access token)."""
    return (
        f"{what} was encrypted with a key that is not in ENCRYPTION_KEYS (changed or lost): "
        "add that key back, first in the list, or set it again with "
        f"`shopify-receiver tenants add --shop {shop_domain or 'SHOP'} {option}`"
    )


class SecretBox:
    """The first key encrypts; every key decrypts, so keys can be rotated without downtime."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()

    def __repr__(self) -> str:
        return "SecretBox(<keys hidden>)"
