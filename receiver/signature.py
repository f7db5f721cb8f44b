"""Shopify webhook signatures: HMAC-SHA256 over the raw body, base64-encoded."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_signature(body: bytes, signature: str | None, secrets: Iterable[str]) -> bool:
    """True when `signature` is the HMAC of exactly these bytes under any of `secrets`.

    Every secret is tried, with a constant-time compare, so neither timing nor the position
    of the matching secret (current or rotated-out) tells an attacker anything.
    """
    if not signature:
        return False
    # Headers arrive as latin-1 text; a byte-exact compare needs bytes.
    given = signature.strip().encode("latin-1", errors="replace")
    matched = False
    for secret in secrets:
        expected = sign(body, secret).encode()
        matched |= hmac.compare_digest(expected, given)
    return matched
