"""The checkpoint signing key (Ed25519): loaded from a PEM file, generated on first use.

The private key stays with the app (mode 0600); auditors get the public key
(`handoff audit public-key`) and verify with it alone. A key's id is the first 16 hex digits of
SHA-256 over its raw 32-byte public key; each checkpoint names the key that signed it, so a log
can outlive a key rotation (verify with every public key the log was signed with).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger("handoff.audit")

DEFAULT_KEY_FILE = "audit-signing-key.pem"


class SigningKeyError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key; the message names the file."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


class Signer:
    """A private key and its id; signs checkpoint payloads."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.private_key.sign(payload)).decode("ascii")

    def public_pem(self) -> str:
        return public_pem(self.public_key)


def verify_signature(public_key: Ed25519PublicKey, payload: bytes, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


_cache: dict[Path, Signer] = {}
_cache_lock = threading.Lock()


def load_signer(path: str | Path, *, create: bool = True) -> Signer:
    """The signer for the PEM at `path`; generated there (mode 0600) if absent and `create`.

    Cached per path: appends sign every N events and must not re-read the file each time.
    """
    path = Path(path).expanduser().resolve()
    with _cache_lock:
        signer = _cache.get(path)
        if signer is None:
            if not path.exists():
                if not create:
                    raise SigningKeyError(f"audit signing key not found: {path}")
                _generate(path)
            signer = Signer(_read_private(path))
            _cache[path] = signer
        return signer


def _generate(path: Path) -> None:
    """Write a new key atomically: two processes racing end up with the same (first) key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-key-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # fails if another process made the key first: theirs wins
            log.warning("generated a new checkpoint signing key at %s", path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _read_private(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("signing key %s is readable by others (mode %o); use 0600", path, mode)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: the audit signing key must be Ed25519")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An auditor's public key from PEM (a private key PEM is accepted too, for convenience)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key
