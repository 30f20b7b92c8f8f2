"""Tokens at rest: AES-GCM with a per-deployment key, so a database copy reveals no token."""

from __future__ import annotations

import base64
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# What Handoff needs of a token response for the launch: credentials, and the verified id_token
# (its `name` claim names the signer where the fhirUser resource cannot be read). The rest
# (patient, encounter: stored as ids; an EHR's extra context such as location or department)
# is not kept.
KEPT_FIELDS = ("access_token", "refresh_token", "token_type", "expires_in", "scope", "id_token")


class TokenCipher:
    """Encrypt and decrypt a token response's credentials bound to its launch context id."""

    def __init__(self, key_b64: str) -> None:
        key = base64.urlsafe_b64decode(key_b64)
        if len(key) != 32:
            raise ValueError("TOKEN_KEY must be 32 bytes, urlsafe base64")
        self._aead = AESGCM(key)

    @staticmethod
    def new_key() -> str:
        return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()

    def encrypt(self, token: dict, context_id: str) -> bytes:
        """Only KEPT_FIELDS are stored: the launch context holds what the screen needs."""
        nonce = os.urandom(12)
        plaintext = json.dumps({k: token[k] for k in KEPT_FIELDS if k in token}).encode()
        return nonce + self._aead.encrypt(nonce, plaintext, context_id.encode())

    def decrypt(self, blob: bytes, context_id: str) -> dict:
        return json.loads(self._aead.decrypt(blob[:12], blob[12:], context_id.encode()))
