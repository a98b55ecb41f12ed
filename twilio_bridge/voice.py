"""Voice webhooks: a phone call as a conversation with Rasa (sender = CallSid)."""
from __future__ import annotations

from typing import Any

import structlog
from flask import Blueprint, Response, request
from twilio.twiml.voice_response import VoiceResponse
from werkzeug.datastructures import MultiDict

from . import metrics
from .assistant import AssistantTurn, Button, read_turn
from .holding import Outcome, past_deadline
from .logs import log
from .phrases import phrases_for
from .rasa_client import RasaError
from .services import (Bridge, answer_every_error, bridge, remember_answer, replay_retried_webhook,
                       require_twilio_signature)
from .text import fold, from_user
from .twiml import Voice, gather_response, goodbye_response, handoff_response, hold_response, turn_response

bp = Blueprint("voice", __name__, url_prefix="/webhook/twilio")
bp.before_request(require_twilio_signature)
bp.before_request(replay_retried_webhook)
bp.after_request(remember_answer)

CALL_TTL = 6 * 3600
STILL_HOLDING_EVERY = 3  # every third hold in a row says so; the others are a silent poll
FINAL_CALL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
SPOKEN_NUMBERS = {
    "uno": 1, "una": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}


def voice_of(current: Bridge) -> Voice:
    settings = current.settings
    return Voice(settings.voice_language, settings.voice_name, phrases_for(settings.voice_language))


def twiml(response: VoiceResponse) -> Response:
    return Response(str(response), status=200, mimetype="text/xml")


def call_metadata(form: MultiDict[str, str], **extra: Any) -> dict[str, Any]:
    metadata = {
        "channel": "voice",
        "call_sid": form.get("CallSid"),
        "account_sid": form.get("AccountSid"),
        "from": form.get("From"),
        "to": form.get("To"),
        "direction": form.get("Direction"),
        "caller_country": form.get("FromCountry"),
    }
    metadata.update(extra)
    return {key: value for key, value in metadata.items() if value is not None}


def call_key(sid: str) -> str:
    return f"call:{sid}"


def hand_off(current: Bridge, spoken: list[str], reason: str, nobody: str | None = None) -> Response:
    """The call leaves the assistant: to a person, or, with none configured, to a goodbye (`nobody`)."""
    number = current.settings.fallback_phone_number
    ending = "handoff" if number else "hangup"
    structlog.contextvars.bind_contextvars(outcome=ending)
    metrics.call_ended(ending, reason)
    return twiml(handoff_response(spoken, voice_of(current), number, nobody))


class Call:
    """One call's state between webhooks, kept in the shared store (any worker may get the next turn)."""

    def __init__(self, current: Bridge, sid: str):
        self.current = current
        self.sid = sid
        self.state: dict[str, Any] = current.store.get(self.key) or {"turn": 0, "silences": 0}
        structlog.contextvars.bind_contextvars(call_sid=sid, turn=self.state["turn"])

    @property
    def key(self) -> str:
        return call_key(self.sid)

    @property
    def buttons(self) -> list[Button]:
        return [Button(**b) for b in self.state.get("buttons", [])]

    def pending_key(self, turn: int) -> str:
        return f"pending:{self.sid}:{turn}"

    def converse(self, message: str, metadata: dict[str, Any], start: bool = False) -> Response:
        """Send the caller's words to Rasa; speak its answer, or hold the caller while it is still thinking."""
        settings = self.current.settings
        turn = self.state["turn"]
        wait = settings.hold_after if settings.holds else settings.rasa_max_wait_seconds + 1
        outcome = self.current.waiter.ask(self.pending_key(turn), self.sid, message, metadata, wait=wait,
                                          max_wait=settings.rasa_max_wait_seconds, extra={"start": start})
        if outcome is None:
            self.save()
            metrics.turn_held("held")
            return self.hold(turn, 1)
        return self.respond(outcome, start)

    def resume(self, turn: int, hold: int) -> Response:
        """The poll after a hold: Rasa's answer as soon as the store has it, or one more hold, or a person."""
        structlog.contextvars.bind_contextvars(turn=turn, hold=hold)
        record = self.current.waiter.collect(self.pending_key(turn), self.current.settings.hold_after)
        if record is None:
            log.warning("hold.lost", detail="no pending turn in the state store")
            metrics.turn_held("gave_up")
            return self.give_up("hold_lost")
        if record["status"] == "waiting":
            if not past_deadline(record):
                return self.hold(turn, hold + 1)
            log.warning("hold.expired", detail="no outcome by the deadline")
            metrics.turn_held("gave_up")
            return self.give_up("max_wait")
        outcome = Outcome.from_record(record)
        metrics.turn_held("gave_up" if outcome.error else "answered")
        return self.respond(outcome, bool(record.get("start")))

    def respond(self, outcome: Outcome, start: bool) -> Response:
        """Speak what Rasa said; without a usable answer the caller reaches a person."""
        structlog.contextvars.bind_contextvars(rasa_ms=round(outcome.seconds * 1000))
        if outcome.items is None:
            log.warning("rasa.failed", kind=outcome.error, detail=outcome.detail)
            structlog.contextvars.bind_contextvars(rasa_error=outcome.error)
            return self.give_up("rasa_failed")
        turn = read_turn(outcome.items)
        if turn.is_empty and start:
            greeting = self.current.settings.voice_greeting or voice_of(self.current).phrases.greeting
            turn = AssistantTurn(texts=(greeting,))
        if turn.is_empty:
            structlog.contextvars.bind_contextvars(rasa_error="empty")
            return self.give_up("rasa_failed")
        return self.answer(turn)

    def hold(self, turn: int, hold: int) -> Response:
        """A holding phrase the first time, a reminder now and then, and back to the poll."""
        structlog.contextvars.bind_contextvars(outcome="hold", hold=hold)
        voice = voice_of(self.current)
        if hold == 1:
            return twiml(hold_response([voice.phrases.hold], voice, turn, hold, pause=1))
        spoken = [voice.phrases.still_holding] if hold % STILL_HOLDING_EVERY == 0 else []
        return twiml(hold_response(spoken, voice, turn, hold))

    def answer(self, turn: AssistantTurn) -> Response:
        """Speak the assistant's turn and remember what the caller was asked, for a reprompt."""
        self.state.update(
            silences=0,
            buttons=[b.__dict__ for b in turn.buttons],
            gather=turn.gather,
            last_prompt=list(turn.texts[-1:]) if turn.texts else self.state.get("last_prompt", []),
        )
        self.save()
        outcome = "hangup" if turn.hangup else "handoff" if turn.handoff else "gather"
        structlog.contextvars.bind_contextvars(outcome=outcome)
        if outcome != "gather":
            metrics.call_ended(outcome, "assistant")
        return twiml(turn_response(turn, voice_of(self.current), self.current.settings.fallback_phone_number))

    def give_up(self, reason: str) -> Response:
        """Something went wrong: an apology, then a person (or a goodbye when there is none to call)."""
        self.save()
        return hand_off(self.current, [voice_of(self.current).phrases.trouble], reason)

    def save(self) -> None:
        self.current.store.put(self.key, self.state, CALL_TTL)


def this_call() -> Call:
    return Call(bridge(), request.form.get("CallSid", "unknown"))


@bp.post("/voice")
def incoming_call() -> Response:
    call = this_call()
    return call.converse("/session_start", call_metadata(request.form, input="call_start"), start=True)


@bp.post("/speech")
def caller_turn() -> Response:
    call = this_call()
    message, kind = caller_message(request.form, call.buttons)
    if not message:
        return silence(call)
    call.state["turn"] += 1
    structlog.contextvars.bind_contextvars(turn=call.state["turn"], input=kind)
    return call.converse(message, call_metadata(request.form, input=kind, confidence=_confidence(request.form)))


@bp.post("/poll")
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
        choice = _choice(digits, speech, buttons)
        if choice is not None:
            return choice.payload, "button"
    if digits:
        return from_user(digits), "dtmf"
    return speech, "speech"


def _choice(digits: str, speech: str, buttons: list[Button]) -> Button | None:
    folded = fold(speech)
    number = int(digits) if digits.isdigit() else SPOKEN_NUMBERS.get(folded) or (int(folded) if folded.isdigit() else None)
    if number is not None and 1 <= number <= len(buttons):
        return buttons[number - 1]
    return next((b for b in buttons if folded and fold(b.title) == folded), None)


def _confidence(form: MultiDict[str, str]) -> float | None:
    try:
        return float(form["Confidence"])
    except (KeyError, ValueError):
        return None


def silence(call: Call) -> Response:
    """Ask again, at most VOICE_MAX_SILENCES times; then a person, or goodbye. Never a loop."""
    current = call.current
    voice = voice_of(current)
    call.state["silences"] = call.state.get("silences", 0) + 1
    structlog.contextvars.bind_contextvars(input="silence", silences=call.state["silences"])
    call.save()
    if call.state["silences"] > current.settings.voice_max_silences:
        return hand_off(current, [], "silence", nobody=voice.phrases.goodbye)
    structlog.contextvars.bind_contextvars(outcome="reprompt")
    prompt = [voice.phrases.reprompt, *call.state.get("last_prompt", [])]
    return twiml(gather_response(prompt, voice, call.state.get("gather"), call.buttons))


@bp.post("/dial-result")
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


@bp.post("/fallback")
def fallback() -> Response:
    """Twilio's Fallback URL (our primary failed) and the bridge's own hand-off: never involves Rasa."""
    current = bridge()
    structlog.contextvars.bind_contextvars(call_sid=request.form.get("CallSid"), error_code=request.form.get("ErrorCode"))
    metrics.fallback_url_called()
    return hand_off(current, [voice_of(current).phrases.trouble], "fallback_url")


@bp.post("/status")
def call_status() -> Response:
    """Call status callback: a finished call ends its Rasa session."""
    current = bridge()
    sid = request.form.get("CallSid", "")
    status = request.form.get("CallStatus", "")
    structlog.contextvars.bind_contextvars(call_sid=sid, call_status=status, outcome="ignored")
    if sid and status in FINAL_CALL_STATUSES:
        current.store.delete(call_key(sid))
        try:
            current.ask_rasa(sid, "/session_end", call_metadata(request.form, input="call_end", call_status=status))
            structlog.contextvars.bind_contextvars(outcome="session_ended")
        except RasaError as exc:
            structlog.contextvars.bind_contextvars(outcome="session_end_failed", rasa_error=exc.kind)
    return Response(status=204)


def _error_answer() -> Response:
    current = bridge()
    return hand_off(current, [voice_of(current).phrases.trouble], "error")


answer_every_error(bp, "voice.unexpected_error", _error_answer)
