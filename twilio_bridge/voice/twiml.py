"""TwiML for voice: pure functions from what the assistant said to a response Twilio accepts.

Twilio's limits are enforced here, once: a <Say> holds at most 3000 characters, it is never
empty, a <Gather> holds only <Say>s, and the whole document stays under 64 kB.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice
from typing import Any, Sequence
from xml.sax.saxutils import escape

from twilio.twiml.voice_response import Gather, VoiceResponse

from .. import routes
from ..config import Settings
from ..limits import SAY_CHARACTERS, TWIML_BYTES
from ..phrases import Phrases
from ..rasa.turn import AssistantTurn, Button
from ..text import for_speech, split_text

SPOKEN_BYTES_LIMIT = TWIML_BYTES - 4000  # of Twilio's 64 kB, leaving room for the tags around the text
REMEMBERED_TEXTS = 1024  # texts whose pieces a worker keeps (spoken_pieces)
REMEMBERED_CHARACTERS = 1000  # the longest text kept: with its pieces, at most about 8 MB per worker
HINTS = 500  # entries of a <Gather>'s hints, each of at most HINT_CHARACTERS: Twilio's limits (warning 13330)
HINT_CHARACTERS = 100
SPEECH_TIMEOUT_WITH_MODEL = 2  # seconds of pause that end speech when a speechModel is set: Twilio refuses "auto" then


@dataclass(frozen=True)
class Voice:
    language: str
    name: str
    phrases: Phrases


def say_all(parent: VoiceResponse | Gather, texts: Sequence[str], voice: Voice, used: int = 0) -> None:
    """Add one <Say> per piece of speech, cutting (with a spoken note) before the size limit; `used`: bytes
    the document holds already beyond the room left for tags (a directive's <Gather> attributes)."""
    budget = SPOKEN_BYTES_LIMIT - used - _xml_bytes(voice.phrases.cut_short)
    for text in texts:
        for piece, size in _pieces(text):
            cost = size + 80
            if cost > budget:
                _say(parent, voice.phrases.cut_short, voice)
                return
            budget -= cost
            _say(parent, piece, voice)


def spoken_pieces(text: str) -> tuple[tuple[str, int], ...]:
    """`text` as a voice reads it, in pieces one <Say> can hold, each with its size in the TwiML."""
    return tuple((piece, _xml_bytes(piece)) for piece in split_text(for_speech(text), SAY_CHARACTERS))


# An assistant says the same texts over and over (its responses are templates, its phrases fixed): each is
# cleaned and cut once per worker, not on every turn (a twentieth of a turn's CPU in the bridge).
_spoken_pieces = lru_cache(maxsize=REMEMBERED_TEXTS)(spoken_pieces)


def _pieces(text: str) -> tuple[tuple[str, int], ...]:
    return _spoken_pieces(text) if len(text) <= REMEMBERED_CHARACTERS else spoken_pieces(text)


def speakable(texts: Sequence[str]) -> tuple[str, ...]:
    """The texts a voice says something for: emoji, markup, symbols or punctuation alone say nothing (a
    letter or a digit does). Texts past what one answer can speak are kept unread: say_all cuts there
    whatever they hold."""
    kept: list[str] = []
    budget = SPOKEN_BYTES_LIMIT
    for index, text in enumerate(texts):
        if budget <= 0:
            return (*kept, *texts[index:])
        pieces = _pieces(text)
        if any(character.isalnum() for piece, _ in pieces for character in piece):
            kept.append(text)
            budget -= sum(size for _, size in pieces)
    return tuple(kept)


def as_spoken(turn: AssistantTurn) -> AssistantTurn | None:
    """The turn as a voice says it, in either voice mode: its texts that say something (`speakable`); None
    when nothing is left to say or do (emoji, markup, an image alone), which is no answer: the caller would
    hear silence."""
    spoken = replace(turn, texts=speakable(turn.texts))
    return spoken if spoken.texts or spoken.buttons or spoken.hangup or spoken.handoff else None


def menu_prompt(buttons: Sequence[Button], phrases: Phrases) -> str:
    options = ", ".join(
        phrases.menu_option.format(number=n, title=for_speech(b.title)) for n, b in enumerate(buttons, 1)
    )
    return f"{phrases.menu_intro} {options}."


def gather_response(texts: Sequence[str], voice: Voice, options: dict[str, Any] | None = None,
                    buttons: Sequence[Button] = ()) -> VoiceResponse:
    """Speak inside a <Gather>, so the caller can answer over any of it."""
    options = dict(options or {})
    spoken = list(texts) + ([menu_prompt(buttons, voice.phrases)] if buttons else [])
    hints = ", ".join(_hints(buttons))
    if hints and "hints" not in options:
        options["hints"] = hints
    input_kind = options.pop("input", "dtmf speech")
    if buttons:  # the menu says "say or press": a <Gather> deaf to either would ignore a caller who did as told
        input_kind = "dtmf speech"
    response = VoiceResponse()
    gather = response.gather(
        input=input_kind,
        action=routes.SPEECH,
        method="POST",
        action_on_empty_result=True,
        language=voice.language,
        speech_timeout=_speech_timeout(input_kind, options),
        timeout=options.pop("timeout", 5),
        **options,
    )
    say_all(gather, spoken, voice, used=_attributes_bytes(options))
    return response


def _attributes_bytes(options: dict[str, Any]) -> int:
    """What a directive's options (and the hints) add to the <Gather>'s tag: the bridge's own attributes fit in
    the room SPOKEN_BYTES_LIMIT leaves, these may not (hints of long titles, a long speech model name)."""
    return sum(len(name) + 4 + _xml_bytes(str(value)) for name, value in options.items())


def _speech_timeout(input_kind: str, options: dict[str, Any]) -> str | int | None:
    """When the caller's speech has ended: at the pause Twilio hears ("auto"), except with a speech model,
    which takes only whole seconds (Twilio warnings 13327, 13335)."""
    if "speech" not in input_kind:
        return None
    return SPEECH_TIMEOUT_WITH_MODEL if "speech_model" in options else "auto"


def _hints(buttons: Sequence[Button]) -> list[str]:
    """The buttons' titles as speech hints, as many as Twilio takes; a longer title is no hint."""
    entries = (entry.strip() for button in buttons for entry in button.title.split(","))
    return list(islice((entry for entry in entries if entry and len(entry) <= HINT_CHARACTERS), HINTS))


def handoff_response(texts: Sequence[str], voice: Voice, number: str | None,
                     nobody: str | None = None, announced: bool = False) -> VoiceResponse:
    """Speak, then put the caller through to a person; with nobody to call, say so (or `nobody`) and hang up.

    `announced`: the texts already tell the caller they are being put through (the assistant's own words),
    so the bridge's transfer phrase would say it twice.
    """
    response = VoiceResponse()
    if number is None:
        say_all(response, [*texts, nobody or voice.phrases.nobody_available], voice)
        response.hangup()
        return response
    say_all(response, [*texts] if announced else [*texts, voice.phrases.transfer], voice)
    response.dial(number, action=routes.DIAL_RESULT, method="POST", timeout=25)
    return response


def goodbye_response(texts: Sequence[str], voice: Voice) -> VoiceResponse:
    response = VoiceResponse()
    say_all(response, texts or [voice.phrases.goodbye], voice)
    response.hangup()
    return response


def hold_response(texts: Sequence[str], voice: Voice, turn: int, hold: int, pause: int = 0) -> VoiceResponse:
    """Keep the caller company while the assistant thinks, then ask the poll route for its answer."""
    response = VoiceResponse()
    say_all(response, texts, voice)
    if pause:
        response.pause(length=pause)
    response.redirect(f"{routes.POLL}?turn={turn}&hold={hold}", method="POST")
    return response


def turn_response(turn: AssistantTurn, voice: Voice, fallback_number: str | None) -> VoiceResponse:
    """The answer to one turn: the assistant's words, then what its directives ask for."""
    if turn.hangup:
        return goodbye_response(turn.texts, voice)
    if turn.handoff:
        # The assistant's words before its hand-off are its announcement of it.
        return handoff_response(turn.texts, voice, turn.handoff_number or fallback_number,
                                announced=bool(turn.texts))
    return gather_response(turn.texts, voice, turn.gather, turn.buttons)


def relay_response(settings: Settings, socket_url: str, end_url: str) -> VoiceResponse:
    """Relay mode's answer to a call: Twilio opens the WebSocket, and posts to `end_url` when the session ends."""
    response = VoiceResponse()
    connect = response.connect(action=end_url, method="POST")
    connect.conversation_relay(
        url=socket_url,
        language=settings.voice_language,
        tts_provider=settings.relay_tts_provider,
        voice=settings.relay_voice_name,
        transcription_provider=settings.relay_transcription_provider,
        dtmf_detection=True,
        interruptible=settings.relay_interruptible,
    )
    return response


def _say(parent: VoiceResponse | Gather, text: str, voice: Voice) -> None:
    if text.strip():
        parent.say(text, voice=voice.name, language=voice.language)


def _xml_bytes(text: str) -> int:
    return len(escape(text, {'"': "&quot;"}).encode("utf-8"))
