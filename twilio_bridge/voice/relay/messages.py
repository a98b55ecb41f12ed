"""ConversationRelay's WebSocket messages as typed values: what Twilio sends, read strictly; what the
bridge sends, written in one place (DESIGN.md, "Streaming voice: ConversationRelay")."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union


class BadMessage(ValueError):
    """A frame that is not a ConversationRelay message the bridge understands."""


@dataclass(frozen=True)
class Setup:
    """The first message: which call this session carries."""

    session_id: str
    call_sid: str
    from_: str | None = None
    to: str | None = None
    direction: str | None = None
    custom_parameters: dict[str, Any] = field(default_factory=dict)

    def as_call_form(self) -> dict[str, str]:
        """The call's fields under the names Twilio's voice webhooks use, for the shared call metadata."""
        form = {"CallSid": self.call_sid, "From": self.from_, "To": self.to, "Direction": self.direction}
        return {name: value for name, value in form.items() if value}


@dataclass(frozen=True)
class Prompt:
    """What the caller said (Twilio's transcript); `last` is false only for partial prompts."""

    text: str
    lang: str | None = None
    last: bool = True


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class Interrupt:
    """The caller talked over the assistant: `heard` is what was spoken before they did."""

    heard: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class RelayError:
    description: str


Incoming = Union[Setup, Prompt, Dtmf, Interrupt, RelayError]
DIGITS = frozenset("0123456789*#")


def read_message(frame: str | bytes) -> Incoming:
    """One frame from Twilio as a typed message; BadMessage says what is wrong with it."""
    try:
        data = json.loads(frame)
    except ValueError as exc:
        raise BadMessage("not JSON") from exc
    except RecursionError as exc:  # nested deeper than the parser follows: a bad frame, not a broken call
        raise BadMessage("JSON nested too deep") from exc
    if not isinstance(data, dict):
        raise BadMessage("not a JSON object")
    kind = data.get("type")
    if kind == "setup":
        call_sid = _text(data, "callSid")
        if not call_sid:
            raise BadMessage("setup without callSid")
        custom = data.get("customParameters")
        return Setup(_text(data, "sessionId"), call_sid, _text(data, "from") or None, _text(data, "to") or None,
                     _text(data, "direction") or None, custom if isinstance(custom, dict) else {})
    if kind == "prompt":
        return Prompt(_text(data, "voicePrompt"), _text(data, "lang") or None, data.get("last", True) is not False)
    if kind == "dtmf":
        digit = _text(data, "digit")
        if digit not in DIGITS:
            raise BadMessage(f"dtmf digit {digit[:5]!r}")
        return Dtmf(digit)
    if kind == "interrupt":
        duration = data.get("durationUntilInterruptMs")
        return Interrupt(_text(data, "utteranceUntilInterrupt"), duration if isinstance(duration, int) else None)
    if kind == "error":
        return RelayError(_text(data, "description"))
    raise BadMessage(f"unknown type {str(kind)[:40]!r}")


def text_token(token: str, last: bool) -> str:
    """Words for Twilio to speak; `last` closes the reply (Twilio's cue that the assistant is done)."""
    return json.dumps({"type": "text", "token": token, "last": last}, ensure_ascii=False)


def end_session(handoff: dict[str, Any]) -> str:
    """The end of the session; Twilio posts `handoffData` (a JSON string, not an object) to the <Connect action>."""
    return json.dumps({"type": "end", "handoffData": json.dumps(handoff, ensure_ascii=False)}, ensure_ascii=False)


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""
