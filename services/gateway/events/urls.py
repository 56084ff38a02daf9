"""Where a webhook may point: public http(s) addresses, plus networks an operator allows.

A webhook makes the gateway send requests on a caller's behalf, so without a check any
admin could have it probe the cluster's own network (metadata services, databases, the
NATS monitor). A URL is refused unless its scheme is http or https and every address its
host resolves to is global unicast, or falls in `webhooks.allowed_networks` (CIDRs). The
check runs when the webhook is created or changed and again before every attempt, since
what a name resolves to can change; the delivery client's resolver applies the same rule
to the addresses it connects to (`delivery.SafeResolver`), so an answer that changes
between the check and the connection is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from shared.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048


class RefusedUrl(InvalidInput):
    """A webhook URL the gateway will not send to; the message says why."""


def _kind(address: Address) -> str | None:
    """What makes `address` non-public, or None for a global unicast address."""
    for attribute, name in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, attribute):
            return name
    return None if address.is_global else "non-public"


def refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why `address` may not be reached (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed if network.version == address.version):
        return None
    kind = _kind(address)
    return f"a {kind} address" if kind else None


def parse(url: str) -> tuple[str, int]:
    """The host and port of an acceptable URL shape, or `RefusedUrl` saying what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedUrl(f"url: at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedUrl(f"url: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedUrl(f"url: unsupported scheme {parts.scheme or '(none)'!r}; use http or https")
    if not parts.hostname:
        raise RefusedUrl("url: no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, allowed: Sequence[Network]) -> None:
    """Raise `RefusedUrl` unless every address of `url`'s host may be reached."""
    host, port = parse(url)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise RefusedUrl(f"url: cannot resolve host {host!r} ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise RefusedUrl(f"url: host {host!r} has no address")
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            shown = host if literal is not None else f"{host} ({address})"
            raise RefusedUrl(
                f"url: {shown} is {reason}; webhooks only reach public addresses"
                " unless EKIBEN_GATEWAY_WEBHOOKS__ALLOWED_NETWORKS allows it"
            )
