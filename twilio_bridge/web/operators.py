"""Who may read the operations endpoints' detail (GET /metrics, GET /health beyond liveness).

Requests from this host that came through no proxy, unless METRICS_TOKEN is set: then anyone
presenting `Authorization: Bearer <token>`, and nobody else.
"""
from __future__ import annotations

import hmac
import ipaddress

from flask import request

# Any header a proxy adds: TRUSTED_PROXIES asks only for X-Forwarded-Proto and X-Forwarded-Host, and a proxy on
# this host that sends just those passes on everyone's requests from 127.0.0.1.
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded", "X-Forwarded-Proto", "X-Forwarded-Host",
                      "X-Forwarded-Port", "X-Forwarded-Prefix")


def bearer_matches(header: str, expected: str | None) -> bool:
    """Whether an Authorization header is `Bearer <expected>` (the scheme in any case, RFC 7235), compared in
    constant time; never when nothing is expected."""
    if not expected:
        return False
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def operator_request(token: str | None) -> bool:
    if token:
        return bearer_matches(request.headers.get("Authorization", ""), token)
    if any(request.headers.get(name) for name in FORWARDING_HEADERS):
        return False  # nginx on this host would otherwise make every visitor look local
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False
