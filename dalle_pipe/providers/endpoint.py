"""Where the API key may go: https anywhere, plain http only to this machine unless the user opts in."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..errors import UsageError

INSECURE_FLAG = "--allow-insecure-http"

# Set from the command line (INSECURE_FLAG) for the whole process: a run builds its providers
# in worker threads, which a context variable would not reach.
_allow_insecure_http = False


def allow_insecure_http(allowed: bool) -> None:
    """The user's answer to INSECURE_FLAG, for every provider built from now on."""
    global _allow_insecure_http
    _allow_insecure_http = allowed


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str | None, *, source: str = "--base-url") -> None:
    """UsageError (exit 2) when url is plain http:// to another machine and the user did not opt in."""
    if not url:
        return
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "http" or _allow_insecure_http:
        return
    if is_loopback(parts.hostname or ""):
        return
    shown = f"http://{parts.netloc.rpartition('@')[2]}"  # never show credentials in the URL
    raise UsageError(
        f"refusing to send the API key unencrypted to {shown} ({source}): use an https:// endpoint",
        f"plain http is allowed only to this machine (localhost, 127.0.0.0/8, ::1); "
        f"pass {INSECURE_FLAG} to send the key over http anyway",
    )
