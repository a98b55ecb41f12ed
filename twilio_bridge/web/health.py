"""GET /health: liveness for anyone (reveals nothing, calls nothing); for operators (web.operators, as
/metrics) the detail: Rasa's and its action server's readiness, the state store, WhatsApp delivery,
and a configuration summary (never a secret)."""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from .. import routes
from ..bridge import Bridge, bridge
from ..rasa.client import RasaError
from ..whatsapp.routes import delivery_counts
from .operators import operator_request

bp = Blueprint("health", __name__)


@bp.get(routes.HEALTH)
def health() -> ResponseReturnValue:
    """A load balancer through nginx learns that this process answers; an operator learns the rest."""
    current = bridge()
    if not operator_request(current.settings.metrics_token):
        return jsonify(status="ok")
    return jsonify(detail(current))


def detail(current: Bridge) -> dict[str, object]:
    """`ok` only when every part a conversation needs answers: Rasa, its action server (when
    ACTION_SERVER_URL names it: Rasa answers 200 with a fallback while its actions are down) and the store."""
    try:
        rasa = {"reachable": True, "version": current.rasa.version(current.settings.rasa_origin, timeout=2.0)}
    except RasaError as exc:
        rasa = {"reachable": False, "error": exc.detail}
    action_server: dict[str, object] = {"configured": current.settings.action_server_url is not None}
    if current.settings.action_server_url is not None:
        try:
            action_server["status"] = current.rasa.action_server_health(current.settings.action_server_url)
            action_server["reachable"] = True
        except RasaError as exc:
            action_server.update(reachable=False, error=exc.detail)
    try:
        state = {"reachable": current.store.ping()}
    except Exception as exc:  # any backend failure is a health fact, not a crash
        state = {"reachable": False, "error": type(exc).__name__}
    ready = rasa["reachable"] and state["reachable"] and action_server.get("reachable", True)
    whatsapp: dict[str, object] = {"replies": "rest" if current.settings.whatsapp_rest_mode else "twiml"}
    try:
        whatsapp["counts"] = delivery_counts(current)
        if current.queue is not None:
            whatsapp["pending"] = current.queue.pending()
    except Exception as exc:
        whatsapp["error"] = type(exc).__name__
    return {"status": "ok" if ready else "degraded", "rasa": rasa, "action_server": action_server, "state": state,
            "whatsapp": whatsapp, "config": current.settings.summary()}
