"""Encryption at rest for access tokens and webhook secrets (Fernet, several keys for rotation)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "SecretBox", "generate_key"]


def generate_key() -> str:
    return Fernet.generate_key().decode()


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
