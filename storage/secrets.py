"""Encryption at rest of channel credentials (Fernet: AES-128-CBC + HMAC-SHA256).

Several keys can be in force at once (``MultiFernet``): the first encrypts, every one
decrypts. That is how the key is rotated without a moment where stored secrets cannot
be read: put a new key first, run ``omnichat rotate-secrets`` (``rotate`` below), then
drop the old key (docs/DEPLOY.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

UNREADABLE = "channel secrets cannot be decrypted with any configured secret key"


class SecretBox:
    """Encrypts and decrypts a dict of secrets with the keys from settings (first encrypts)."""

    def __init__(self, keys: str | bytes | Sequence[str | bytes]) -> None:
        given = [keys] if isinstance(keys, str | bytes) else list(keys)
        if not given:
            raise ValueError("SecretBox needs at least one Fernet key")
        fernets = [Fernet(k.encode() if isinstance(k, str) else k) for k in given]
        self._primary = fernets[0]
        self._fernet = MultiFernet(fernets)

    @staticmethod
    def generate_key() -> str:
        """A new random key (urlsafe base64, 32 bytes)."""
        return Fernet.generate_key().decode()

    def seal(self, secrets: dict[str, Any]) -> bytes:
        """Encrypt a dict of secrets (with the first key)."""
        return self._fernet.encrypt(json.dumps(secrets).encode())

    def open(self, token: bytes | None) -> dict[str, Any]:
        """Decrypt what ``seal`` produced (an empty dict for None), with any of the keys."""
        if not token:
            return {}
        try:
            return json.loads(self._fernet.decrypt(bytes(token)))
        except InvalidToken as exc:
            raise ValueError(UNREADABLE) from exc

    def is_current(self, token: bytes) -> bool:
        """Whether the first key alone decrypts ``token`` (nothing to rotate)."""
        try:
            self._primary.decrypt(bytes(token))
        except InvalidToken:
            return False
        return True

    def rotate(self, token: bytes) -> bytes:
        """``token`` re-encrypted with the first key (raises ValueError when no key opens it)."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken as exc:
            raise ValueError(UNREADABLE) from exc
