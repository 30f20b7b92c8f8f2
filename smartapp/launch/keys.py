"""Handoff's signing keys for `private_key_jwt` client authentication.

Private keys live in the key folder (0700; one JWK file per key id, mode 0600); every key there is
published (public part only) at `/.well-known/jwks.json`. Rotation: generate a new key, register
its kid with the EHR (or let the EHR fetch the JWKS), switch the registration's `key_id`, then
retire the old key.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, RSAKey

from smartapp.startup import private_folder, write_new_private_file

ALGORITHMS: dict[str, tuple[str, int | str]] = {"RS384": ("RSA", 2048), "ES384": ("EC", "P-384")}
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


class KeyStoreError(Exception):
    """A key is missing or invalid; the message names it."""


class KeyStore:
    """A folder of private JWKs, one file per kid."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, kid: str) -> Path:
        if not KID_PATTERN.match(kid):
            raise KeyStoreError(f"invalid key id {kid!r}")
        return self.folder / f"{kid}.jwk.json"

    def generate(self, alg: str, kid: str | None = None) -> str:
        """Create a key for `alg` (RS384 or ES384); returns its kid."""
        if alg not in ALGORITHMS:
            raise KeyStoreError(f"unsupported algorithm {alg}; use one of {sorted(ALGORITHMS)}")
        kid = kid or f"{alg.lower()}-{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
        path = self._path(kid)
        if path.exists():
            raise KeyStoreError(f"key {kid} exists already")
        kty, size = ALGORITHMS[alg]
        key = _generate_key(kty, size)
        data = key.as_dict(private=True) | {"kid": kid, "alg": alg, "use": "sig"}
        private_folder(self.folder)
        if not write_new_private_file(path, json.dumps(data)):  # 0600 from the first byte
            raise KeyStoreError(f"key {kid} exists already")
        return kid

    def kids(self) -> list[str]:
        return sorted(p.name.removesuffix(".jwk.json") for p in self.folder.glob("*.jwk.json"))

    def private_key(self, kid: str) -> RSAKey | ECKey:
        path = self._path(kid)
        if not path.exists():
            raise KeyStoreError(
                f"signing key {kid} not found in {self.folder} (run `handoff keys generate`)"
            )
        data = json.loads(path.read_text())
        return RSAKey.import_key(data) if data["kty"] == "RSA" else ECKey.import_key(data)

    def algorithm(self, kid: str) -> str:
        return json.loads(self._path(kid).read_text())["alg"]

    def retire(self, kid: str) -> None:
        """Stop publishing and using a key."""
        path = self._path(kid)
        if not path.exists():
            raise KeyStoreError(f"key {kid} not found")
        path.unlink()

    def public_jwks(self) -> dict:
        """The JWKS document: public parts only, with kid, alg and use."""
        keys = []
        for kid in self.kids():
            data = json.loads(self._path(kid).read_text())
            public = self.private_key(kid).as_dict(private=False)
            keys.append(public | {"kid": kid, "alg": data["alg"], "use": "sig"})
        if not keys:
            return {"keys": []}
        return dict(KeySet.import_key_set({"keys": keys}).as_dict(private=False))


def _generate_key(kty: str, size: int | str) -> RSAKey | ECKey:
    """A new private key: RSA of `size` bits, or EC on the curve `size` names."""
    if kty == "RSA":
        return RSAKey.generate_key(int(size))
    return ECKey.generate_key(str(size))
