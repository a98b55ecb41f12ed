"""GET /metrics: every worker's metrics in Prometheus' text format.

Served only to requests from this host that did not come through a proxy, unless METRICS_TOKEN
is set: then to anyone presenting `Authorization: Bearer <token>`, and to nobody else.
"""
from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from .services import bridge

bp = Blueprint("scrape", __name__)
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


@bp.get("/metrics")
def metrics() -> Response:
    settings = bridge().settings
    if not allowed(settings.metrics_token):
        return Response("Forbidden: /metrics is served to localhost, or with METRICS_TOKEN\n", status=403,
                        mimetype="text/plain")
    registry = REGISTRY
    if settings.metrics_dir:  # gunicorn: add up the files every worker, alive or gone, has written
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=settings.metrics_dir)
    return Response(generate_latest(registry), status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})


def allowed(token: str | None) -> bool:
    if token:
        presented = request.headers.get("Authorization", "")
        return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())
    if any(request.headers.get(name) for name in FORWARDING_HEADERS):
        return False  # nginx on this host would otherwise make every visitor look local
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False
