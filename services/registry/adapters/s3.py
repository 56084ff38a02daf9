"""The object store, through aioboto3: one client for the life of the service."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, Self

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from shared.settings import S3Settings


class BlobStore:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._session = aioboto3.Session()
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> Self:
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self._client = await self._stack.enter_async_context(
            self._session.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                region_name=self.settings.region,
                aws_access_key_id=self.settings.access_key_id,
                aws_secret_access_key=self.settings.secret_access_key.get_secret_value(),
                config=config,
            )
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("BlobStore used outside its context")
        return self._client

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (idempotent, safe from every replica)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
                await self.client.create_bucket(Bucket=self.bucket)

    async def ping(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)
