"""A relay-mode call: one ConversationRelay WebSocket carrying one call's conversation with Rasa.

Lifecycle: open (Twilio's `setup`, Rasa's greeting) → turns (prompts, keypad digits, interrupts,
silences) → end. Every way out that is not the caller hanging up ends with words the caller hears
and an `end` message whose handoffData tells `/webhook/twilio/relay/end` what to do (hang up, or
put the caller through to a person); the socket is always closed. Rasa is asked in the relay
loop's thread pool, so a slow Rasa holds a pool thread, never the loop.
"""
from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import structlog
from websockets.exceptions import ConnectionClosed

from ... import metrics
from ...bridge import Bridge
from ...limits import SAY_CHARACTERS
from ...logs import log
from ...phrases import Phrases, phrases_for
from ...rasa.client import RasaError
from ...rasa.menu import choose_button
from ...rasa.turn import AssistantTurn, Button, read_turn
from ...text import fold, for_speech, from_user, split_text
from ..call import call_metadata
from ..twiml import as_spoken, menu_prompt
from .messages import (
    BadMessage,
    Dtmf,
    Incoming,
    Interrupt,
    Prompt,
    RelayError,
    Setup,
    end_session,
    read_message,
    text_token,
)

class Workers(Protocol):
    """Where a session's blocking work runs (the relay server's pools), so the event loop never waits on it."""

    async def run_blocking(self, function: Callable[..., Any], *args: Any) -> Any: ...

    async def ask_rasa(self, sender: str, message: str, metadata: dict[str, Any], timeout: float) -> Any: ...

SETUP_SECONDS = 10.0  # Twilio sends `setup` as soon as the socket opens
# <Gather>'s own defaults, which gather mode's keypad answers follow: keys typed this long apart are
# one answer, and '#' ends it
GATHER_TIMEOUT = 5
GATHER_FINISH_ON_KEY = "#"


def relay_call_key(call_sid: str) -> str:
    """Where the call webhook leaves the call's metadata for its relay session (any worker, any host)."""
    return f"relay:{call_sid}"


class Socket(Protocol):
    async def recv(self) -> str | bytes: ...
    async def send(self, message: str) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Ending:
    """How the session ends: `reason` hangup or handoff (to `number`, or nobody when there is none), and why."""

    reason: str
    why: str
    number: str | None = None
    spoken: tuple[str, ...] = ()

    def handoff_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"reason": self.reason, "why": self.why}
        if self.number:
            data["number"] = self.number
        if self.reason == "handoff" and self.why == "assistant" and self.spoken:
            data["announced"] = True  # the assistant's words told the caller: the end route does not repeat it
        return data


class RelaySession:
    """One call over one WebSocket. `run()` returns when the call has left the assistant or the socket closed."""

    def __init__(self, current: Bridge, socket: Socket, workers: Workers):
        self.current = current
        self.settings = current.settings
        self.socket = socket
        self.workers = workers
        self.phrases: Phrases = phrases_for(self.settings.voice_language)
        self.setup: Setup | None = None
        self.call_form: dict[str, str] = {}
        self.turns = 0
        self.interrupts = 0
        self.silences = 0
        self.buttons: tuple[Button, ...] = ()
        self.gather: dict[str, Any] = {}
        self.last_prompt: tuple[str, ...] = ()
        self.digits = ""
        self.heard: str | None = None  # what the caller heard of an interrupted reply, for Rasa's next message
        self.spoken = ""  # the bridge's last reply as sent, which an interrupt's `heard` must begin
        self.greeting_ending: Ending | None = None  # a greeting that already ends the call (Rasa failed)

    async def run(self) -> None:
        started = time.monotonic()
        ending: Ending | None = None
        metrics.relay_session_opened()
        try:
            await self.open()
            ending = await self.converse()
        except ConnectionClosed:  # the caller hung up (Twilio closed the socket): nothing left to say
            pass
        except asyncio.CancelledError:  # the worker is stopping: a person takes the call over
            ending = self.trouble("shutdown")
        except SessionFailed as exc:
            log.warning("relay.failed", detail=str(exc))
            ending = self.trouble(exc.why)
        except Exception:
            log.exception("relay.unexpected_error")
            ending = self.trouble("error")
        finally:
            await self.end(ending, time.monotonic() - started)

    # open ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Wait for Twilio's `setup`, start Rasa's session with the call's metadata and speak its greeting."""
        try:
            first = read_message(await asyncio.wait_for(self.socket.recv(), SETUP_SECONDS))
        except TimeoutError:
            raise SessionFailed("no_setup", f"no setup message within {SETUP_SECONDS:g} s") from None
        except BadMessage as exc:
            raise SessionFailed("no_setup", f"first message: {exc}") from None
        if not isinstance(first, Setup):
            raise SessionFailed("no_setup", f"first message is {type(first).__name__}, not setup")
        self.setup = first
        self.call_form = first.as_call_form()
        structlog.contextvars.bind_contextvars(call_sid=first.call_sid, relay_session=first.session_id)
        metadata = await self.workers.run_blocking(self.current.store.get, relay_call_key(first.call_sid))
        if not isinstance(metadata, dict):  # the call webhook's copy is gone (expired, another store): rebuild it
            metadata = await self.workers.run_blocking(functools.partial(call_metadata, self.call_form, self.current.store,
                                                             input="call_start"))
        log.info("relay.open", direction=first.direction)
        self.greeting_ending = await self.ask("/session_start", metadata, start=True)

    # turns --------------------------------------------------------------------------------------

    async def converse(self) -> Ending:
        """Turn after turn until the assistant, a failure or the caller's silence ends the call."""
        if self.greeting_ending is not None:
            return self.greeting_ending
        while True:
            message = await self.next_message()
            if message is None:
                ending = await self.on_silence()
            elif isinstance(message, Prompt):
                ending = await self.on_words(message.text, "speech") if message.last else None
            elif isinstance(message, Dtmf):
                ending = await self.on_digit(message.digit)
            elif isinstance(message, Interrupt):
                self.on_interrupt(message)
                ending = None
            elif isinstance(message, RelayError):
                log.warning("relay.twilio_error", description=message.description[:200])
                ending = None
            else:
                log.warning("relay.setup_again")
                ending = None
            if ending is not None:
                return ending

    async def next_message(self) -> Incoming | None:
        """The caller's next message, or None after VOICE_SILENCE_SECONDS of nothing (while keypad digits
        are being collected, the gather directive's timeout). Frames Twilio should never send are logged
        and skipped."""
        wait = self.gather.get("timeout", GATHER_TIMEOUT) if self.digits else self.settings.voice_silence_seconds
        deadline = time.monotonic() + wait
        while True:
            try:
                frame = await asyncio.wait_for(self.socket.recv(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
            try:
                return read_message(frame)
            except BadMessage as exc:
                log.warning("relay.bad_message", detail=str(exc))

    def on_interrupt(self, message: Interrupt) -> None:
        """What the caller heard goes to Rasa with the next message, if it was of the last reply: the socket is
        not read while Rasa is asked, so an interrupted holding phrase is read only after the answer was
        spoken, and its `heard` ("Un mo…") is not what the caller heard of that answer."""
        self.interrupts += 1
        metrics.relay_interrupted()
        of_reply = fold(self.spoken).startswith(fold(message.heard))
        if of_reply:
            self.heard = message.heard
        log.info("relay.interrupt", heard_chars=len(message.heard), ms=message.duration_ms, of_reply=of_reply)

    async def on_words(self, words: str, kind: str) -> Ending | None:
        """A caller's utterance (or collected digits): a menu choice becomes its button's payload."""
        text = from_user(words)
        if not text:
            return None
        choice = choose_button(text, self.buttons) if self.buttons else None
        message, kind = (choice.payload, "button") if choice is not None else (text, kind)
        return await self.turn(message, kind)

    async def on_digit(self, digit: str) -> Ending | None:
        """Keypad digits, as a <Gather> takes them: while a `gather` directive accepts keys, they are one answer,
        sent at its finish key ('#' unless it names another, '' for none), at `num_digits`, or when the caller
        stops for its timeout (5 s unless it names one). Without one, a key answers at once (a menu's button).
        A '#' or '*' before any digit answers nothing (the habitual '#' after `num_digits` digits, say)."""
        if not self.digits and digit in "#*":
            return None
        if not self.gathers_digits():
            return await self.on_digits(digit)
        finish = self.gather.get("finish_on_key", GATHER_FINISH_ON_KEY)
        if finish and digit == finish:
            digits, self.digits = self.digits, ""
            return await self.on_digits(digits) if digits else None
        self.digits += digit
        wanted = self.gather.get("num_digits")
        if wanted and len(self.digits) >= wanted:
            digits, self.digits = self.digits, ""
            return await self.on_digits(digits)
        return None

    def gathers_digits(self) -> bool:
        """Whether the assistant's last question is a <Gather> that takes keys (its input is dtmf speech by default)."""
        return bool(self.gather) and "dtmf" in self.gather.get("input", "dtmf speech")

    async def on_digits(self, digits: str) -> Ending | None:
        """The caller's keypad answer: a menu's button when it names one (as in gather mode), else the digits."""
        choice = choose_button(digits, self.buttons) if self.buttons else None
        if choice is not None:
            return await self.turn(choice.payload, "button")
        return await self.turn(from_user(digits), "dtmf")

    async def on_silence(self) -> Ending | None:
        """Digits typed so far are an answer; otherwise reprompt, at most VOICE_MAX_SILENCES times, then a person."""
        if self.digits:
            digits, self.digits = self.digits, ""
            return await self.on_digits(digits)
        self.silences += 1
        structlog.contextvars.bind_contextvars(silences=self.silences)
        if self.silences > self.settings.voice_max_silences:
            return self.handoff("silence")
        log.info("relay.reprompt")
        menu = (menu_prompt(self.buttons, self.phrases),) if self.buttons else ()
        await self.speak((self.phrases.reprompt, *self.last_prompt, *menu))
        return None

    async def turn(self, message: str, kind: str) -> Ending | None:
        self.turns += 1
        self.silences = 0
        structlog.contextvars.bind_contextvars(turn=self.turns, input=kind)
        metrics.relay_turn(kind)
        extra: dict[str, Any] = {"input": kind}
        if self.heard is not None:
            extra["interrupted"] = {"heard": self.heard}
            self.heard = None
        return await self.ask(message, call_metadata(self.call_form, **extra))

    async def ask(self, message: str, metadata: dict[str, Any], start: bool = False) -> Ending | None:
        """Ask Rasa and speak its answer; a holding phrase if it is slow, an apology and a person if it fails."""
        assert self.setup is not None
        settings = self.settings
        asked = asyncio.ensure_future(self.workers.ask_rasa(self.setup.call_sid, message, metadata,
                                                            settings.rasa_max_wait_seconds))
        held = False
        try:
            if settings.holds:
                try:
                    items = await asyncio.wait_for(asyncio.shield(asked), settings.hold_after)
                except TimeoutError:
                    held = True
                    metrics.turn_held("held")
                    await self.speak((self.phrases.hold,))
            if held or not settings.holds:
                items = await asyncio.wait_for(asked, settings.rasa_max_wait_seconds + 1)
        except TimeoutError:
            if held:
                metrics.turn_held("gave_up")
            log.warning("rasa.failed", kind="max_wait")
            return self.trouble("max_wait")
        except RasaError as exc:
            if held:
                metrics.turn_held("gave_up")
            log.warning("rasa.failed", kind=exc.kind, detail=exc.detail)
            return self.trouble("max_wait" if exc.kind == "timeout" else "rasa_failed")  # its timeout is the longest wait
        if held:
            metrics.turn_held("answered")
        return await self.respond(read_turn(items), start)

    async def respond(self, answer: AssistantTurn, start: bool) -> Ending | None:
        turn = as_spoken(answer)
        if turn is None and start:
            turn = AssistantTurn(texts=(self.settings.voice_greeting or self.phrases.greeting,))
        if turn is None:
            log.warning("rasa.failed", kind="empty")
            return self.trouble("rasa_failed")
        self.buttons, self.gather, self.digits = turn.buttons, turn.gather, ""
        if turn.texts:
            self.last_prompt = turn.texts[-1:]
        menu = (menu_prompt(turn.buttons, self.phrases),) if turn.buttons else ()
        if turn.hangup:  # with no words of its own, the goodbye gather mode says: never a hang-up in silence
            return Ending("hangup", "assistant", spoken=turn.texts or (self.phrases.goodbye,))
        if turn.handoff:
            return Ending("handoff", "assistant", turn.handoff_number or self.settings.fallback_phone_number,
                          spoken=turn.texts)
        await self.speak((*turn.texts, *menu))
        return None

    # speaking and ending ------------------------------------------------------------------------

    async def speak(self, texts: tuple[str, ...]) -> None:
        """Stream the texts as tokens, cleaned for speech; the last one says the reply is complete."""
        pieces = [piece for text in texts for piece in split_text(for_speech(text), SAY_CHARACTERS) if piece.strip()]
        tokens = [piece + ("" if number == len(pieces) else " ") for number, piece in enumerate(pieces, 1)]
        self.spoken = "".join(tokens)
        for number, token in enumerate(tokens, 1):
            await self.socket.send(text_token(token, number == len(tokens)))

    def trouble(self, why: str) -> Ending:
        """An apology, then a person (or a goodbye when there is none to call)."""
        return Ending("handoff", why, self.settings.fallback_phone_number, spoken=(self.phrases.trouble,))

    def handoff(self, why: str) -> Ending:
        return Ending("handoff", why, self.settings.fallback_phone_number)

    async def end(self, ending: Ending | None, seconds: float) -> None:
        """Say the last words and hand the call back to TwiML; always close the socket and count the session."""
        if ending is not None:
            try:
                await self.speak(ending.spoken)
                await self.socket.send(end_session(ending.handoff_data()))
            except ConnectionClosed:  # gone before the last words: the status callback still ends Rasa's session
                pass
            metrics.call_ended("handoff" if ending.reason == "handoff" and ending.number else "hangup", ending.why)
        try:
            await self.socket.close()
        except Exception:  # closing a broken socket: nothing left to tell anyone
            log.debug("relay.close_failed")
        if self.setup is not None:
            try:
                await self.workers.run_blocking(self.current.store.delete, relay_call_key(self.setup.call_sid))
            except Exception:
                log.exception("relay.forget_failed")
        outcome = ending.reason if ending is not None else "caller_hung_up"
        metrics.relay_session_closed(outcome, ending.why if ending is not None else "caller")
        log.info("relay.session", outcome=outcome, why=ending.why if ending else "caller", turns=self.turns,
                 interrupts=self.interrupts, seconds=round(seconds, 1))


class SessionFailed(Exception):
    def __init__(self, why: str, detail: str):
        super().__init__(detail)
        self.why = why
