"""GET /health: liveness, Rasa reachability and a configuration summary (never a secret)."""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from .. import routes
from ..bridge import bridge
from ..rasa.client import RasaError
from ..whatsapp.routes import delivery_counts

bp = Blueprint("health", __name__)


@bp.get(routes.HEALTH)
def health() -> ResponseReturnValue:
    current = bridge()
    try:
        rasa = {"reachable": True, "version": current.rasa.version(current.settings.rasa_origin, timeout=2.0)}
    except RasaError as exc:
        rasa = {"reachable": False, "error": exc.detail}
    try:
        state = {"reachable": current.store.ping()}
    except Exception as exc:  # any backend failure is a health fact, not a crash
        state = {"reachable": False, "error": type(exc).__name__}
    status = "ok" if rasa["reachable"] and state["reachable"] else "degraded"
    whatsapp: dict[str, object] = {"replies": "rest" if current.settings.whatsapp_rest_mode else "twiml"}
    try:
        whatsapp["counts"] = delivery_counts(current)
        if current.queue is not None:
            whatsapp["pending"] = current.queue.pending()
    except Exception as exc:
        whatsapp["error"] = type(exc).__name__
    return jsonify(status=status, rasa=rasa, state=state, whatsapp=whatsapp, config=current.settings.summary())
