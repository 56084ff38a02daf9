"""The object store, through aioboto3: one client for the life of the service.

Archives never pass through the registry: it hands out presigned URLs (a single PUT, one
URL per multipart part, a GET) that authorize themselves with a SigV4 signature in the
query string, and only talks to the store itself to open, complete or abort a multipart
upload, to check what arrived (HEAD) and to delete.

A signature covers the host, so presigned URLs are made by a second client configured with
`public_endpoint_url` when clients reach the store at another address than the service
does (in a cluster: an internal service name versus an ingress).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import InvalidInput, Unavailable
from shared.settings import S3Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

# S3 error codes that mean "the caller's multipart request is wrong", not "the store is down".
_MULTIPART_CALLER_ERRORS = {
    "InvalidPart": "a part is missing or its ETag does not match what was uploaded",
    "InvalidPartOrder": "parts must be listed in ascending order",
    "EntityTooSmall": "every part but the last must be at least 5 MiB",
    "NoSuchUpload": "the multipart upload is not open (completed, aborted or unknown)",
    "MalformedXML": "the part list is malformed",
}
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


@dataclass(frozen=True)
class Presigned:
    url: str
    expires_at: datetime


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.asynccontextmanager
async def _store_errors(what: str) -> AsyncIterator[None]:
    """Faults of the store itself become `Unavailable` (the caller may retry)."""
    try:
        yield
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        raise Unavailable(f"object store refused {what}: {_code(exc)} {message}".strip()) from exc
    except BotoCoreError as exc:
        raise Unavailable(f"object store unreachable during {what}: {exc}") from exc


class BlobStore:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.expiry_seconds = settings.presigned_url_expiry_seconds
        self._session = aioboto3.Session()
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._presigner: S3Client | None = None

    def _client_for(self, endpoint_url: str | None) -> Any:
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
        )
        return self._session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=self.settings.region,
            aws_access_key_id=self.settings.access_key_id,
            aws_secret_access_key=self.settings.secret_access_key.get_secret_value(),
            config=config,
        )

    async def __aenter__(self) -> Self:
        self._client = await self._stack.enter_async_context(
            self._client_for(self.settings.endpoint_url)
        )
        public = self.settings.public_endpoint_url
        if public and public != self.settings.endpoint_url:
            self._presigner = await self._stack.enter_async_context(self._client_for(public))
        else:
            self._presigner = self._client
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        self._client = None
        self._presigner = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("BlobStore used outside its context")
        return self._client

    @property
    def presigner(self) -> S3Client:
        if self._presigner is None:
            raise RuntimeError("BlobStore used outside its context")
        return self._presigner

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (idempotent, safe from every replica)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
                await self.client.create_bucket(Bucket=self.bucket)

    async def ping(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)

    # --- presigned URLs (no request to the store) -----------------------------------------

    async def _presign(
        self, method: str, params: dict[str, Any], seconds: int | None = None
    ) -> Presigned:
        """A URL for `method`, valid `seconds` (at most `expiry_seconds`, the default)."""
        seconds = min(seconds or self.expiry_seconds, self.expiry_seconds)
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        url = await self.presigner.generate_presigned_url(
            method, Params={"Bucket": self.bucket, **params}, ExpiresIn=seconds
        )
        return Presigned(url=url, expires_at=expires_at)

    async def presign_put(self, key: str) -> Presigned:
        """A URL that accepts one `PUT` of the whole object (no Content-Type needed)."""
        return await self._presign("put_object", {"Key": key})

    async def presign_get(self, key: str, seconds: int | None = None) -> Presigned:
        return await self._presign("get_object", {"Key": key}, seconds)

    async def presign_upload_part(self, key: str, upload_id: str, part_number: int) -> Presigned:
        """A URL that accepts one `PUT` of part `part_number`; S3 answers with its ETag."""
        return await self._presign(
            "upload_part", {"Key": key, "UploadId": upload_id, "PartNumber": part_number}
        )

    # --- requests to the store ------------------------------------------------------------

    async def create_multipart_upload(self, key: str) -> str:
        async with _store_errors("CreateMultipartUpload"):
            response = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return response["UploadId"]

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        """Assemble `(part_number, etag)` parts, in ascending order, into the object."""
        try:
            async with _store_errors("CompleteMultipartUpload"):
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]
                    },
                )
        except Unavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _code(cause) in _MULTIPART_CALLER_ERRORS:
                why = _MULTIPART_CALLER_ERRORS[_code(cause)]
                raise InvalidInput(f"cannot complete the multipart upload: {why}") from cause
            raise

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Drop an open multipart upload and its parts; one that is gone already is fine."""
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise

    async def head(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""
        try:
            async with _store_errors("HeadObject"):
                response = await self.client.head_object(Bucket=self.bucket, Key=key)
        except Unavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _code(cause) in _MISSING:
                return None
            raise
        return int(response["ContentLength"])

    async def delete(self, key: str) -> None:
        """Delete an object; deleting one that does not exist succeeds."""
        await self.client.delete_object(Bucket=self.bucket, Key=key)
