"""Who may read the operations endpoints' detail (GET /metrics, GET /health beyond liveness).

Requests from this host that came through no proxy, unless METRICS_TOKEN is set: then anyone
presenting `Authorization: Bearer <token>`, and nobody else.
"""
from __future__ import annotations

import hmac
import ipaddress

from flask import request

FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


def operator_request(token: str | None) -> bool:
    if token:
        presented = request.headers.get("Authorization", "")
        return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())
    if any(request.headers.get(name) for name in FORWARDING_HEADERS):
        return False  # nginx on this host would otherwise make every visitor look local
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False
