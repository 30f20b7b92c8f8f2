"""Tokens at rest: AES-GCM with a per-deployment key, so a database copy reveals no token."""

from __future__ import annotations

import base64
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class TokenCipher:
    """Encrypt and decrypt a token response (a dict) bound to its launch context id."""

    def __init__(self, key_b64: str) -> None:
        key = base64.urlsafe_b64decode(key_b64)
        if len(key) != 32:
            raise ValueError("TOKEN_KEY must be 32 bytes, urlsafe base64")
        self._aead = AESGCM(key)

    @staticmethod
    def new_key() -> str:
        return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()

    def encrypt(self, token: dict, context_id: str) -> bytes:
        nonce = os.urandom(12)
        plaintext = json.dumps(token).encode()
        return nonce + self._aead.encrypt(nonce, plaintext, context_id.encode())

    def decrypt(self, blob: bytes, context_id: str) -> dict:
        return json.loads(self._aead.decrypt(blob[:12], blob[12:], context_id.encode()))
