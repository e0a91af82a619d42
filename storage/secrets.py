"""Encryption at rest of channel credentials (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Encrypts and decrypts a dict of secrets with the key from settings."""

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    @staticmethod
    def generate_key() -> str:
        """A new random key (urlsafe base64, 32 bytes)."""
        return Fernet.generate_key().decode()

    def seal(self, secrets: dict[str, Any]) -> bytes:
        """Encrypt a dict of secrets."""
        return self._fernet.encrypt(json.dumps(secrets).encode())

    def open(self, token: bytes | None) -> dict[str, Any]:
        """Decrypt what ``seal`` produced (an empty dict for None)."""
        if not token:
            return {}
        try:
            return json.loads(self._fernet.decrypt(bytes(token)))
        except InvalidToken as exc:
            raise ValueError("channel secrets cannot be decrypted with this secret_key") from exc
