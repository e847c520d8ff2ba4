"""The endpoint's host, as entries record it: an image made against a local stand-in is never
up to date for a real endpoint."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..providers import endpoint

DEFAULT_URL = "https://api.openai.com/v1"


def endpoint_host(url: str | None) -> str | None:
    """`host[:port]` of an endpoint URL (no user, no path); None when it has none."""
    try:
        parts = urlsplit(url or DEFAULT_URL)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return f"{host}:{port}" if port else host


def is_loopback(host: str | None) -> bool:
    """The endpoint rule of providers/endpoint.py (localhost, 127.0.0.0/8, ::1) for a recorded
    `host[:port]`: the same hosts count as this machine for reuse as for sending the key over http."""
    if not host:
        return False
    name = host
    if name.startswith("["):  # [::1]:8000
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:  # 127.0.0.1:8000 (a bare IPv6 address has more colons)
        name = name.split(":", 1)[0]
    return endpoint.is_loopback(name)


def reusable_from(entry_host: object, current: str | None) -> bool:
    """Whether an image made against `entry_host` may be reused against `current`: not when it was
    made against a loopback stand-in and this run talks to a real endpoint. Entries without the
    field (written before it existed) match any host."""
    if not isinstance(entry_host, str) or current is None:
        return True
    return is_loopback(current) or not is_loopback(entry_host)
