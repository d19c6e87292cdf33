"""Bearer-token and origin checks for the management API (RELIABILITY S17).

- With a token, every mutating request (any method but GET/HEAD/OPTIONS) needs
  ``Authorization: Bearer <token>``; with ``auth_reads`` reads need it too, except the
  routes in :data:`PUBLIC_ROUTES` (``/healthz``, the dashboard page and its files, the
  OpenAPI document), which carry no data. The comparison is constant-time.
- A mutation sent by a browser from another origin (its ``Origin`` header names another
  host) is refused, so a web page cannot steer a token-less local scheduler (CSRF).
- ``local_only`` (set by :func:`aiosched.web.serve` for a token-less loopback bind) refuses
  requests whose ``Host`` is not a loopback name, which defeats DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

#: route names reachable without a token even with ``auth_reads``.
PUBLIC_ROUTES = frozenset({"healthz", "dashboard", "static", "openapi"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without port) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8080`` -> ``::1``)."""
    return urlsplit(f"//{host_header}").hostname or ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def auth_middleware(*, token: str | None, auth_reads: bool, local_only: bool) -> Middleware:
    """The middleware that applies the rules of this module."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if local_only and not is_loopback(_host_name(request.host)):
            return _error(403, "this API only answers requests addressed to localhost")
        mutation = request.method not in READ_METHODS
        if mutation and not _same_origin(request):
            return _error(403, "cross-origin request refused")
        if token is not None:
            route = request.match_info.route.name
            protected = mutation or (auth_reads and route not in PUBLIC_ROUTES)
            if protected and route is not None and not token_matches(request.headers.get("Authorization"), token):
                return _error(
                    401,
                    "a valid 'Authorization: Bearer <token>' header is required",
                    {"WWW-Authenticate": 'Bearer realm="aiosched"'},
                )
        return await handler(request)

    return check


def _same_origin(request: web.Request) -> bool:
    """False only for a browser request whose Origin names another host than the one addressed."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (curl, scripts), or a same-origin GET
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc.lower() == request.host.lower()
