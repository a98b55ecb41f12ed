"""What the assistant said, read from Rasa's reply items into one typed turn.

Voice and WhatsApp render the same `AssistantTurn`; neither looks at raw Rasa JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import E164
from ..limits import GATHER_INPUTS

# The options a `gather` directive may carry (docs/architecture.md); anything else is dropped.
GATHER_OPTIONS = frozenset({"input", "num_digits", "finish_on_key", "timeout", "hints", "speech_model"})


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class AssistantTurn:
    texts: tuple[str, ...] = ()
    buttons: tuple[Button, ...] = ()
    images: tuple[str, ...] = ()
    hangup: bool = False
    handoff: bool = False
    handoff_number: str | None = None
    gather: dict[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.texts or self.images or self.hangup or self.handoff)


def read_turn(items: list[dict[str, Any]]) -> AssistantTurn:
    """Fold Rasa's items into a turn. Anything after a hangup or handoff is never heard, so it stops there."""
    texts: list[str] = []
    buttons: list[Button] = []
    images: list[str] = []
    gather: dict[str, Any] = {}
    for item in items:
        text = item.get("text")
        if isinstance(text, str) and text.strip():
            texts.append(text)
        buttons.extend(_buttons(item.get("buttons")))
        image = item.get("image")
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            images.append(image)
        custom = item.get("custom")
        if not isinstance(custom, dict):
            continue
        if isinstance(custom.get("gather"), dict):
            gather = _gather_options(custom["gather"])
        if custom.get("hangup") is True:
            return AssistantTurn(tuple(texts), (), tuple(images), hangup=True)
        handoff = custom.get("handoff")
        if handoff is True or isinstance(handoff, dict):
            number = handoff.get("number") if isinstance(handoff, dict) else None
            number = number if isinstance(number, str) and E164.match(number) else None
            return AssistantTurn(tuple(texts), (), tuple(images), handoff=True, handoff_number=number)
    return AssistantTurn(tuple(texts), tuple(buttons), tuple(images), gather=gather)


def _buttons(raw: Any) -> list[Button]:
    if not isinstance(raw, list):
        return []
    found = []
    for entry in raw:
        if isinstance(entry, dict) and isinstance(entry.get("title"), str) and isinstance(entry.get("payload"), str):
            if entry["title"].strip() and entry["payload"].strip():
                found.append(Button(entry["title"].strip(), entry["payload"].strip()))
    return found


def _gather_options(raw: dict[str, Any]) -> dict[str, Any]:
    """Keep only options Twilio accepts, with sane values; a bad directive must not break the call."""
    raw = {name: value for name, value in raw.items() if name in GATHER_OPTIONS}
    options: dict[str, Any] = {}
    if raw.get("input") in GATHER_INPUTS:
        options["input"] = raw["input"]
    for name, low, high in (("num_digits", 1, 32), ("timeout", 1, 30)):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            options[name] = value
    if isinstance(raw.get("finish_on_key"), str) and raw["finish_on_key"] in list("0123456789*#") + [""]:
        options["finish_on_key"] = raw["finish_on_key"]
    for name in ("hints", "speech_model"):
        if isinstance(raw.get(name), str) and 0 < len(raw[name]) <= 1000:
            options[name] = raw[name]
    return options
