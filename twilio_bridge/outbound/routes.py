"""The outbound API's routes: JSON in and out, `Authorization: Bearer OUTBOUND_API_TOKEN` on every one.

Without OUTBOUND_API_TOKEN the blueprint is not registered at all: every path answers 404.
"""
from __future__ import annotations

from typing import Any

import structlog
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import metrics, routes
from ..bridge import Bridge, bridge
from ..config import Settings
from ..logs import log
from ..web.operators import bearer_matches
from . import calls, messages
from .idempotency import HEADER, MAX_KEY_CHARACTERS, Answer, Key, once
from .orders import BadField, read_call_order, read_message_order

bp = Blueprint("outbound", __name__)
PLACER = "twilio_bridge.outbound.placer"
# Above any order worth sending (50 variables of 1024 characters, all escaped as \uXXXX pairs, are 600 KiB) and
# far under a worker's memory: without it a body was read whole however large (gunicorn passes chunked ones on).
MAX_REQUEST_BYTES = 1024 * 1024


def register(app: Flask, settings: Settings) -> None:
    """The factory's step: the routes, and the Calls API client when calls can be placed (TWILIO_VOICE_FROM)."""
    if not settings.outbound_enabled:
        return
    if settings.twilio_voice_from:  # load_settings made sure the account and the public URL are there too
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.public_base_url
        app.extensions[PLACER] = calls.CallPlacer(settings.twilio_account_sid, settings.twilio_auth_token,
                                                  settings.twilio_api_base_url, settings.public_base_url)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, refused_by_routing)


@bp.before_request
def require_bearer_token() -> Response | None:
    presented = request.headers.get("Authorization", "")
    if bearer_matches(presented, bridge().settings.outbound_api_token):
        return None
    structlog.contextvars.bind_contextvars(outcome="unauthorized")
    log.warning("outbound.unauthorized", path=request.path, presented=bool(presented))
    answer = _json({"error": "authorization: send Authorization: Bearer <OUTBOUND_API_TOKEN>"}, 401)
    answer.headers["WWW-Authenticate"] = 'Bearer realm="outbound"'
    return answer


@bp.post(routes.OUTBOUND_MESSAGES)
def send_message() -> Response:
    current = bridge()
    payload = read_payload()
    key = idempotency_key("messages")
    order = read_message_order(payload, current.settings)

    def queue_it(message_id: str) -> Answer:
        assert current.queue is not None  # delivers_through_rest: the account is configured with the token
        if messages.queue_message(current.store, current.queue, message_id, order) and current.workers is not None:
            current.workers.wake()
        structlog.contextvars.bind_contextvars(outbound_id=message_id, channel=order.channel, outcome="queued")
        return {"id": message_id, "status": "queued", "to": order.to,
                "status_url": f"{routes.OUTBOUND_MESSAGES}/{message_id}"}, 202

    return _answer(*once(current.store, key, payload, messages.ID_PREFIX, queue_it))


@bp.post(routes.OUTBOUND_CALLS)
def start_call() -> Response:
    current = bridge()
    payload = read_payload()
    key = idempotency_key("calls")
    order = read_call_order(payload, current.settings)
    return _answer(*once(current.store, key, payload, calls.ID_PREFIX,
                         lambda call_id: place_call(current, call_id, order)))


def place_call(current: Bridge, call_id: str, order: calls.CallOrder) -> Answer:
    structlog.contextvars.bind_contextvars(outbound_id=call_id)
    placer: calls.CallPlacer = current_app.extensions[PLACER]
    record = calls.remember_call(current.store, call_id, order)  # before Twilio, whose callbacks may come first
    try:
        call_sid = placer.place(call_id, order)
    except calls.CallRefused as exc:
        calls.mark_refused(current.store, record, exc)
        metrics.outbound_call_placed("refused")
        structlog.contextvars.bind_contextvars(outcome="refused")
        log.error("outbound.call.refused", status=exc.status, code=exc.code, detail=exc.detail)
        refused_it = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
        return {"error": f"twilio: the Calls API did not place the call: {exc.detail}", "twilio_status": exc.status,
                "twilio_code": exc.code}, 422 if refused_it else 502
    calls.mark_placed(current.store, record, call_sid)
    metrics.outbound_call_placed("placed")
    structlog.contextvars.bind_contextvars(call_sid=call_sid, outcome="placed")
    return {"id": call_id, "status": "queued", "to": order.to, "call_sid": call_sid,
            "status_url": f"{routes.OUTBOUND_CALLS}/{call_id}"}, 202


@bp.get(routes.OUTBOUND_MESSAGE)
def message_status(message_id: str) -> Response:
    found = messages.report(bridge().store, message_id)
    return _json(found, 200) if found else _json({"error": "message_id: no outbound message has this id"}, 404)


@bp.get(routes.OUTBOUND_CALL)
def call_status(call_id: str) -> Response:
    found = calls.report(bridge().store, call_id)
    return _json(found, 200) if found else _json({"error": "call_id: no outbound call has this id"}, 404)


def read_payload() -> Any:
    """The request's JSON, None when it is not JSON (the order reader names `request` then)."""
    request.max_content_length = MAX_REQUEST_BYTES  # a Content-Length over it is refused before reading
    try:
        if len(request.get_data()) >= MAX_REQUEST_BYTES:  # a chunked body is only cut there
            raise RequestEntityTooLarge()
        return request.get_json(silent=True)
    except RecursionError:  # the parser recurses once per [ or {, and silent=True only swallows ValueError
        raise BadField("request", "the JSON is nested too deeply to be read") from None
    except RequestEntityTooLarge:
        raise RequestEntityTooLarge(f"the body must be under {MAX_REQUEST_BYTES // 1024} KiB") from None


def idempotency_key(scope: str) -> Key | None:
    value = request.headers.get(HEADER)
    if value is None:
        return None
    if not value.strip() or len(value) > MAX_KEY_CHARACTERS:
        raise BadField(HEADER, f"1 to {MAX_KEY_CHARACTERS} characters")
    return Key(scope, value.strip())


def refused_by_routing(exc: HTTPException) -> Response | HTTPException:
    """A path under /api/outbound that no route serves (404), or a method its route does not take (405), is
    refused before the blueprint is chosen: in JSON too. Every other path keeps Flask's own answer."""
    if request.path == routes.OUTBOUND or request.path.startswith(routes.OUTBOUND + "/"):
        return http_error(exc)
    return exc


def http_error(exc: HTTPException) -> Response:
    """An HTTP refusal in the API's own JSON, naming the request, with its status and headers (405's Allow)."""
    response = _json({"error": f"{request.method} {request.path}: {exc.description}"}, exc.code or 500)
    response.headers.extend((name, value) for name, value in exc.get_headers() if name != "Content-Type")
    return response


@bp.errorhandler(Exception)
def unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return http_error(exc)
    log.exception("outbound.unexpected_error")
    structlog.contextvars.bind_contextvars(outcome="error")
    return _json({"error": "internal: the request failed on the bridge; its log says more"}, 500)


@bp.errorhandler(BadField)
def refused(exc: BadField) -> Response:
    """A field the request got wrong: 400 with one line naming it."""
    structlog.contextvars.bind_contextvars(outcome="bad_request", bad_field=exc.name)
    return _json({"error": str(exc)}, 400)


def _answer(answer: Answer, replayed: bool) -> Response:
    body, status = answer
    response = _json(body, status)
    if replayed:
        structlog.contextvars.bind_contextvars(outcome="replayed")
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _json(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
