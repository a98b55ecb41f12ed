"""GET /metrics: every worker's metrics in Prometheus' text format.

Served only to requests from this host that did not come through a proxy, unless METRICS_TOKEN
is set: then to anyone presenting `Authorization: Bearer <token>`, and to nobody else.
The WhatsApp queue's depth is read from the shared queue at each scrape, not counted by workers.
"""
from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from .. import routes
from ..bridge import Bridge, bridge
from ..logs import log
from ..metrics import whatsapp_queue_depth

bp = Blueprint("scrape", __name__)
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


@bp.get(routes.METRICS)
def metrics() -> Response:
    current = bridge()
    settings = current.settings
    if not allowed(settings.metrics_token):
        return Response("Forbidden: /metrics is served to localhost, or with METRICS_TOKEN\n", status=403,
                        mimetype="text/plain")
    refresh_queue_depth(current)
    registry = REGISTRY
    if settings.metrics_dir:  # gunicorn: add up the files every worker, alive or gone, has written
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=settings.metrics_dir)
    return Response(generate_latest(registry), status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})


def refresh_queue_depth(current: Bridge) -> None:
    """The queue is shared by every worker and host: its length read now is the one true depth."""
    if current.queue is None:
        return
    try:
        whatsapp_queue_depth(current.queue.pending())
    except Exception as exc:  # the state store is down: the scrape still answers, with the last depth read
        log.warning("metrics.queue_depth_unavailable", error=type(exc).__name__, detail=str(exc)[:200])


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
