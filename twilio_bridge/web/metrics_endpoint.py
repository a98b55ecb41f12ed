"""GET /metrics: every worker's metrics in Prometheus' text format.

Served only to operators (web.operators: this host through no proxy, or METRICS_TOKEN).
The WhatsApp queue's depth is read from the shared queue at each scrape, not counted by workers.
"""
from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from .. import routes
from ..bridge import Bridge, bridge
from ..logs import log
from ..metrics import whatsapp_queue_depth
from .operators import operator_request

bp = Blueprint("metrics", __name__)


@bp.get(routes.METRICS)
def metrics() -> Response:
    current = bridge()
    settings = current.settings
    if not operator_request(settings.metrics_token):
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

