"""Standard Webhooks signatures (https://www.standardwebhooks.com/), and sealed secrets.

A webhook's signing secret is `whsec_` + base64 of 24 random bytes. Each request carries

    webhook-id:        the delivery's id, the same on every retry and redelivery
    webhook-timestamp: Unix seconds when this attempt was signed
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" under the secret>

so a receiver checks the signature, refuses stale timestamps (replays) and drops repeats
by id. The tests verify with the `standardwebhooks` reference package, not with this code.

Secrets are kept encrypted (Fernet: AES-128-CBC + HMAC-SHA256) under a key derived from
`webhooks.secret_key`, or from a key generated once and kept in the database when that
setting is unset; the API shows a secret once, when it is made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken

SECRET_PREFIX = "whsec_"  # noqa: S105 - a marker, not a secret
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


class SecretBox:
    """Encrypts and decrypts signing secrets at rest."""

    def __init__(self, key_material: bytes) -> None:
        # Any key material, stretched to the 32 bytes Fernet wants.
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_material).digest()))

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise RuntimeError(
                "a webhook secret does not decrypt: webhooks.secret_key changed?"
            ) from None


def new_key_material() -> bytes:
    return secrets.token_bytes(32)
