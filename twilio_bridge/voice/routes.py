"""Voice webhooks: a phone call as a conversation with Rasa (sender = CallSid)."""
from __future__ import annotations

import structlog
from flask import Blueprint, Response, request
from twilio.twiml.voice_response import VoiceResponse
from werkzeug.datastructures import MultiDict

from .. import metrics, routes
from ..bridge import bridge
from ..outbound import calls as outbound_calls
from ..rasa.client import RasaError
from ..rasa.menu import choose_button
from ..rasa.turn import Button
from ..text import from_user
from ..web.errors import answer_every_error
from ..web.hooks import remember_answer, replay_retried_webhook, require_twilio_signature
from ..web.responses import twiml
from .call import GatherCall, call_key, call_metadata, hand_off, voice_of
from .relay.routes import answer_call_with_relay
from .twiml import gather_response, goodbye_response

bp = Blueprint("voice", __name__)
bp.before_request(require_twilio_signature)
bp.before_request(replay_retried_webhook)
bp.after_request(remember_answer)

FINAL_CALL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
MACHINES = ("machine_", "fax")  # Twilio's AnsweredBy for a voicemail (machine_start, machine_end_beep…) or a fax


def this_call() -> GatherCall:
    return GatherCall(bridge(), request.form.get("CallSid", "unknown"))


@bp.post(routes.VOICE)
def incoming_call() -> Response:
    call = this_call()
    metadata = call_metadata(request.form, call.current.store, outbound=request.args.get("outbound"),
                             input="call_start")
    if call.current.settings.voice_mode == "relay":
        return answer_call_with_relay(call.current, metadata)
    if request.form.get("AnsweredBy", "").startswith(MACHINES):
        call.state["machine"] = True  # for the whole call: later webhooks need not carry AnsweredBy
    return call.converse("/session_start", metadata, start=True)


@bp.post(routes.SPEECH)
def caller_turn() -> Response:
    call = this_call()
    message, kind = caller_message(request.form, call.buttons)
    if not message:
        return silence(call)
    call.state["turn"] += 1
    structlog.contextvars.bind_contextvars(turn=call.state["turn"], input=kind)
    return call.converse(message, call_metadata(request.form, input=kind, confidence=_confidence(request.form)))


@bp.post(routes.POLL)
def poll() -> Response:
    """Where a held call comes back (<Redirect>) for the answer to its turn."""
    call = this_call()
    turn = request.args.get("turn", type=int)
    if turn is None:
        return call.give_up("hold_lost")
    return call.resume(turn, request.args.get("hold", 1, type=int))


def caller_message(form: MultiDict[str, str], buttons: list[Button]) -> tuple[str, str]:
    """What goes to Rasa, and how the caller said it: a menu choice becomes its button's payload."""
    digits = (form.get("Digits") or "").strip()
    speech = from_user(form.get("SpeechResult"))
    if buttons:
        choice = choose_button(digits, buttons) if digits else choose_button(speech, buttons)
        if choice is not None:
            return choice.payload, "button"
    if digits:
        return from_user(digits), "dtmf"
    return speech, "speech"


def _confidence(form: MultiDict[str, str]) -> float | None:
    """Twilio's 0..1 score; anything else is no score (NaN would make the JSON to Rasa invalid)."""
    try:
        confidence = float(form["Confidence"])
    except (KeyError, ValueError):
        return None
    return confidence if 0.0 <= confidence <= 1.0 else None


def silence(call: GatherCall) -> Response:
    """Ask again, at most VOICE_MAX_SILENCES times; then a person, or goodbye. Never a loop. An answering
    machine is never put through: the person would talk to a recording."""
    current = call.current
    voice = voice_of(current)
    call.state["silences"] = call.state.get("silences", 0) + 1
    structlog.contextvars.bind_contextvars(input="silence", silences=call.state["silences"])
    if call.state["silences"] > current.settings.voice_max_silences:
        return hand_off(current, [], "silence", nobody=voice.phrases.goodbye, save=call.saved,
                        to_a_person=not call.state.get("machine"))
    structlog.contextvars.bind_contextvars(outcome="reprompt")
    prompt = [voice.phrases.reprompt, *call.state.get("last_prompt", [])]
    return call.saved(twiml(gather_response(prompt, voice, call.state.get("gather"), call.buttons)))


@bp.post(routes.DIAL_RESULT)
def dial_result() -> Response:
    """After <Dial>: the call ends after a conversation with a person, or with a goodbye if nobody answered."""
    status = request.form.get("DialCallStatus", "")
    structlog.contextvars.bind_contextvars(call_sid=request.form.get("CallSid"), dial_status=status, outcome="hangup")
    if status == "completed":
        response = VoiceResponse()
        response.hangup()
        return twiml(response)
    voice = voice_of(bridge())
    return twiml(goodbye_response([voice.phrases.nobody_available], voice))


@bp.post(routes.FALLBACK)
def fallback() -> Response:
    """Twilio's Fallback URL (our primary failed) and the bridge's own hand-off: never involves Rasa."""
    current = bridge()
    structlog.contextvars.bind_contextvars(call_sid=request.form.get("CallSid"), error_code=request.form.get("ErrorCode"))
    metrics.fallback_url_called()
    return hand_off(current, [voice_of(current).phrases.trouble], "fallback_url")


@bp.post(routes.CALL_STATUS)
def call_status() -> Response:
    """Call status callback: a finished call ends its Rasa session."""
    current = bridge()
    sid = request.form.get("CallSid", "")
    status = request.form.get("CallStatus", "")
    structlog.contextvars.bind_contextvars(call_sid=sid, call_status=status, outcome="ignored")
    placed = outbound_calls.record_status(current.store, request.args.get("outbound"), request.form)
    if placed is not None and status in outbound_calls.UNANSWERED:  # Rasa never heard of a call nobody answered
        structlog.contextvars.bind_contextvars(outcome="outbound_unanswered")
        return Response(status=204)
    if sid and status in FINAL_CALL_STATUSES:
        current.store.delete(call_key(sid))
        try:
            current.ask_rasa(sid, "/session_end", call_metadata(request.form, input="call_end", call_status=status))
            structlog.contextvars.bind_contextvars(outcome="session_ended")
        except RasaError as exc:
            structlog.contextvars.bind_contextvars(outcome="session_end_failed", rasa_error=exc.kind)
    return Response(status=204)


def _error_answer() -> Response:
    """An apology and a person; on the way out of a call (after the <Dial>), an apology and goodbye:
    dialling again would put the caller through to the person over and over."""
    current = bridge()
    voice = voice_of(current)
    if request.path == routes.DIAL_RESULT:
        structlog.contextvars.bind_contextvars(outcome="hangup")
        return twiml(goodbye_response([voice.phrases.trouble, voice.phrases.goodbye], voice))
    return hand_off(current, [voice.phrases.trouble], "error")


answer_every_error(bp, "voice.unexpected_error", _error_answer)
