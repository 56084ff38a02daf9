"""Password hashes: Argon2id through argon2-cffi (memory-hard; RFC 9106's second
recommended profile, 64 MiB and 3 passes), computed off the event loop."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


def _verify(encoded: str, password: str) -> bool:
    try:
        return _HASHER.verify(encoded, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _decoy() -> str:
    return _HASHER.hash("a password nobody has")


async def verify_password(encoded: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash (unknown user, no password set) the same
    work is done against a decoy, so the answer's timing does not tell them apart."""
    if encoded is None:
        await asyncio.to_thread(_verify, _decoy(), password)
        return False
    return await asyncio.to_thread(_verify, encoded, password)
