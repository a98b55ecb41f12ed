"""A call's conversation with Rasa (sender = CallSid): its state between webhooks, what goes to Rasa
with it, and how it leaves the assistant. Gather mode speaks through one webhook per turn."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from flask import Response
from werkzeug.datastructures import MultiDict

from .. import metrics
from ..bridge import Bridge
from ..logs import log
from ..outbound.calls import outbound_call_metadata
from ..phrases import phrases_for
from ..rasa.turn import AssistantTurn, Button, read_turn
from ..state import StateStore
from ..web.hooks import answer_storing
from ..web.responses import twiml
from .holding import Outcome
from .twiml import Voice, as_spoken, handoff_response, hold_response, turn_response

CALL_TTL = 6 * 3600  # what the store keeps of a call, in either mode: longer than any call lasts
STILL_HOLDING_EVERY = 3  # every third hold in a row says so; the others are a silent poll


def voice_of(current: Bridge) -> Voice:
    settings = current.settings
    return Voice(settings.voice_language, settings.voice_name, phrases_for(settings.voice_language))


def call_metadata(form: MultiDict[str, str], store: StateStore | None = None, outbound: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    """What Rasa gets with a call's message. With the store (a call's start, in any voice mode), a call the
    bridge placed adds its direction and context (`outbound_call_metadata`): found by `outbound`, the id its
    voice webhook's URL carries (that webhook may come before the Calls API has answered with the call's
    sid), else by that sid."""
    metadata = {
        "channel": "voice",
        "call_sid": form.get("CallSid"),
        "account_sid": form.get("AccountSid"),
        "from": form.get("From"),
        "to": form.get("To"),
        "direction": form.get("Direction"),
        "caller_country": form.get("FromCountry"),
        "answered_by": form.get("AnsweredBy"),
    }
    if store is not None:
        metadata.update(outbound_call_metadata(store, form.get("CallSid"), outbound))
    metadata.update(extra)
    return {key: value for key, value in metadata.items() if value is not None}


def call_key(sid: str) -> str:
    return f"call:{sid}"


def hand_off(current: Bridge, spoken: list[str], reason: str, nobody: str | None = None,
             save: Callable[[Response], Response] | None = None, to_a_person: bool = True) -> Response:
    """The call leaves the assistant: to a person, or, with none configured (or not `to_a_person`: an answering
    machine), to a goodbye (`nobody`). `save` stores the call's state with the answer (GatherCall.saved); the
    ending is counted once the answer stands: a store that fails makes it the error's hand-off, counted there."""
    number = current.settings.fallback_phone_number if to_a_person else None
    ending = "handoff" if number else "hangup"
    structlog.contextvars.bind_contextvars(outcome=ending)
    response = twiml(handoff_response(spoken, voice_of(current), number, nobody))
    if save is not None:
        response = save(response)
    metrics.call_ended(ending, reason)
    return response


class GatherCall:
    """One gather-mode call's state between webhooks, kept in the shared store (any worker may get the next turn)."""

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
            metrics.turn_held("held")
            return self.saved(self.hold(turn, 1))
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
            if not self.current.waiter.past_deadline(self.pending_key(turn)):
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
            return self.give_up("overloaded" if outcome.error == "overloaded" else "rasa_failed")
        turn = as_spoken(read_turn(outcome.items))
        if turn is None and start:
            greeting = self.current.settings.voice_greeting or voice_of(self.current).phrases.greeting
            turn = AssistantTurn(texts=(greeting,))
        if turn is None:
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
        outcome = "hangup" if turn.hangup else "handoff" if turn.handoff else "gather"
        structlog.contextvars.bind_contextvars(outcome=outcome)
        response = self.saved(twiml(turn_response(turn, voice_of(self.current), self.current.settings.fallback_phone_number)))
        if outcome != "gather":  # counted once the answer stands: a store that fails makes it the error's hand-off
            metrics.call_ended(outcome, "assistant")
        return response

    def give_up(self, reason: str) -> Response:
        """Something went wrong: an apology, then a person (or a goodbye when there is none to call)."""
        return hand_off(self.current, [voice_of(self.current).phrases.trouble], reason, save=self.saved)

    def saved(self, response: Response) -> Response:
        """`response`, once the call's state is stored for its next webhook (with the answer kept for a retry of
        this one, in the same write: web.hooks.answer_storing)."""
        return answer_storing(response, self.key, self.state, CALL_TTL)
