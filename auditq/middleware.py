"""Request -> audit context: the user, the client's address and a request id."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from auditq import conf
from auditq.stream.context import REQUEST_ID, audit_context


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """Return the client's address, believing ``X-Forwarded-For`` only from trusted proxies.

    The header is read right to left: each hop appended by a trusted proxy is skipped, and
    the first untrusted address is the client. A malformed hop ends the walk there.
    """
    trusted = conf.get().TRUSTED_PROXIES
    remote = _address(request.META.get("REMOTE_ADDR"))
    if remote is None:
        return None

    def is_trusted(address: Any) -> bool:
        return any(address in network for network in trusted)

    if not is_trusted(remote):
        return str(remote)
    client = remote
    hops = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed([h for h in hops if h.strip()]):
        address = _address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address):
            break
    return str(client)


def request_id(request: HttpRequest) -> str:
    """Return the request's sane ``X-Request-ID``, or a new UUID4 hex."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class AuditContextMiddleware:
    """Put the request's user, address and id in the audit context (sync and async).

    Place it after ``AuthenticationMiddleware``. The user stays lazy: no query is made
    unless the request changes an audited object.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _context(self, request: HttpRequest) -> dict[str, Any]:
        return {
            "actor": getattr(request, "user", None),
            "remote_addr": client_address(request),
            "request_id": request_id(request),
        }

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        with audit_context(**self._context(request)) as context:
            response = self.get_response(request)
        response.headers.setdefault("X-Request-ID", context.request_id)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        with audit_context(**self._context(request)) as context:
            response = await self.get_response(request)
        response.headers.setdefault("X-Request-ID", context.request_id)
        return response
