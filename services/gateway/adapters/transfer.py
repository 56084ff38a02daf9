"""Proxied transfers: stream bytes between an HTTP client and a presigned S3 URL.

The gateway never holds object-store credentials and never buffers a whole body: an
upload's request body is forwarded to the presigned PUT chunk by chunk as it arrives, and
a download is relayed from the presigned GET the same way. Memory stays at a few chunks
whatever the size.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import httpx

from shared.errors import Unavailable

# Generous: a slow S3 may take a while to acknowledge the last byte of a large object.
_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=10.0)


class Transfers:
    def __init__(self) -> None:
        self._client = httpx.AsyncClient(timeout=_TIMEOUT)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def put(self, url: str, body: AsyncIterable[bytes], length: int) -> str | None:
        """Stream `length` bytes of `body` to a presigned PUT URL; the store's ETag."""
        try:
            response = await self._client.put(
                url, content=body, headers={"Content-Length": str(length)}
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc
        if response.status_code != 200:
            raise Unavailable(
                f"object store refused the upload: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        etag: str | None = response.headers.get("etag")
        return etag

    async def open_get(self, url: str) -> httpx.Response:
        """Start a presigned GET; the caller streams `aiter_raw()` and closes it."""
        request = self._client.build_request("GET", url)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc
        if response.status_code != 200:
            await response.aclose()
            raise Unavailable(f"object store refused the download: HTTP {response.status_code}")
        return response
