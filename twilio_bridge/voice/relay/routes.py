"""Relay-mode routes (VOICE_MODE=relay): the ConversationRelay WebSocket, and where Twilio goes when its session ends."""
from __future__ import annotations

import json
from typing import Any

import structlog
from flask import Blueprint, Request, Response, current_app, request
from twilio.twiml.voice_response import VoiceResponse

from ... import routes
from ...bridge import Bridge, bridge
from ...config import E164
from ...web.errors import answer_every_error
from ...web.hooks import require_twilio_signature
from ...web.responses import twiml
from ..call import hand_off, voice_of
from ..twiml import handoff_response, relay_response
from .server import relay_loop
from .session import CALL_KEY_TTL, relay_call_key

bp = Blueprint("relay", __name__)
bp.before_request(require_twilio_signature)


def answer_call_with_relay(current: Bridge, metadata: dict[str, Any]) -> Response:
    """The call webhook in relay mode: keep the call's metadata for its session, and connect Twilio to the WebSocket."""
    call_sid = metadata.get("call_sid")
    if call_sid:
        current.store.put(relay_call_key(call_sid), metadata, CALL_KEY_TTL)
    structlog.contextvars.bind_contextvars(call_sid=call_sid, outcome="relay")
    return twiml(relay_response(current.settings, relay_socket_url(current, request), relay_end_url(current)))


def relay_socket_url(current: Bridge, incoming: Request) -> str:
    """The public ws(s):// URL of the WebSocket (Twilio signs the upgrade for exactly this URL)."""
    origin = current.settings.public_base_url or incoming.host_url.rstrip("/")
    return "ws" + origin.removeprefix("http") + routes.RELAY


def relay_end_url(current: Bridge) -> str:
    return (current.settings.public_base_url or "") + routes.RELAY_END


@bp.route(routes.RELAY, websocket=True)
def relay_socket() -> Response:
    """The upgrade arrives signed (checked above, 403 otherwise); the session runs on this worker's relay loop."""
    structlog.contextvars.bind_contextvars(outcome="relay_open")
    return relay_loop(current_app).accept(request)


@bp.post(routes.RELAY_END)
def relay_ended() -> Response:
    """The <Connect action>: the session's handoffData says hang up or put the caller through; without it
    (the socket broke, the bridge failed) the caller hears an apology and reaches a person."""
    current = bridge()
    form = request.form
    structlog.contextvars.bind_contextvars(call_sid=form.get("CallSid"), session_status=form.get("SessionStatus"),
                                          error_code=form.get("ErrorCode"))
    handoff = _handoff_data(form.get("HandoffData"))
    voice = voice_of(current)
    if handoff is None:
        return hand_off(current, [voice.phrases.trouble], "relay_lost")
    if handoff.get("reason") == "hangup":
        structlog.contextvars.bind_contextvars(outcome="hangup")
        response = VoiceResponse()
        response.hangup()
        return twiml(response)
    number = handoff.get("number")
    number = number if isinstance(number, str) and E164.match(number) else None
    nobody = voice.phrases.goodbye if handoff.get("why") == "silence" else None
    structlog.contextvars.bind_contextvars(outcome="handoff" if number else "hangup")
    return twiml(handoff_response([], voice, number, nobody, announced=handoff.get("announced") is True))


def _handoff_data(raw: str | None) -> dict[str, Any] | None:
    try:
        data = json.loads(raw or "")
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("reason") in ("hangup", "handoff") else None


def _error_answer() -> Response:
    current = bridge()
    return hand_off(current, [voice_of(current).phrases.trouble], "error")


answer_every_error(bp, "relay.unexpected_error", _error_answer)
