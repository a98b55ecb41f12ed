"""What an operator's request asks for, read and checked field by field: a bad field is one line naming it.

The reader takes the settings too, because a request may be well formed and still impossible here
(an SMS where no TWILIO_SMS_FROM is set): the answer names the field and what is missing.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import E164, Settings
from ..limits import MESSAGE_CHARACTERS

CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
CONTEXT_BYTES = 4096  # what the assistant gets as metadata on every reply: an id and a few facts, not a document
MAX_VARIABLES = 50
MAX_NESTING = 32  # levels of objects and arrays in a field: a few facts need two or three
VARIABLE_CHARACTERS = 1024
MACHINE_DETECTION = ("Enable", "DetectMessageEnd")  # Twilio's MachineDetection values
NOT_FINITE = "numbers must be finite: NaN, Infinity and 1e999 are not JSON numbers"
NOT_TEXT = "holds a lone surrogate (such as \\ud800) that is not text: it cannot be sent as UTF-8"


class BadField(ValueError):
    """One field of the request is wrong; str() is the one line the client gets."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name


@dataclass(frozen=True)
class MessageOrder:
    to: str
    from_: str
    content_sid: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return "whatsapp" if self.to.startswith("whatsapp:") else "sms"


@dataclass(frozen=True)
class CallOrder:
    to: str
    from_: str
    context: dict[str, Any] = field(default_factory=dict)
    machine_detection: str | None = None


def read_message_order(payload: Any, settings: Settings) -> MessageOrder:
    fields = _fields(payload, {"to", "content_sid", "variables", "body", "context"})
    to = _string(fields, "to")
    whatsapp = to.startswith("whatsapp:")
    if not E164.match(to.removeprefix("whatsapp:")):
        raise BadField("to", "must be whatsapp:+E164 for WhatsApp or +E164 for SMS, such as whatsapp:+5215512345678")
    from_ = settings.twilio_whatsapp_from if whatsapp else settings.twilio_sms_from
    if not from_:
        raise BadField("to", f"this bridge has no {'TWILIO_WHATSAPP_FROM' if whatsapp else 'TWILIO_SMS_FROM'} "
                             f"to send {'WhatsApp messages' if whatsapp else 'SMS'} from")
    if ("content_sid" in fields) == ("body" in fields):
        raise BadField("content_sid", "give a template (content_sid, with its variables) or a free text (body), "
                                      "one of the two")
    context = _context(fields)
    if "body" in fields:
        if "variables" in fields:
            raise BadField("variables", "only go with a template (content_sid)")
        body = _string(fields, "body")
        if len(body) > MESSAGE_CHARACTERS:
            raise BadField("body", f"at most {MESSAGE_CHARACTERS} characters")
        return MessageOrder(to, from_, body=body, context=context)
    content_sid = _string(fields, "content_sid")
    if not CONTENT_SID.match(content_sid):
        raise BadField("content_sid", "must be a Content API template's sid: HX and 32 hexadecimal characters")
    return MessageOrder(to, from_, content_sid=content_sid, variables=_variables(fields), context=context)


def read_call_order(payload: Any, settings: Settings) -> CallOrder:
    fields = _fields(payload, {"to", "context", "machine_detection"})
    to = _string(fields, "to")
    if not E164.match(to):
        raise BadField("to", "must be an E.164 number such as +5215512345678")
    if not settings.twilio_voice_from:
        raise BadField("to", "this bridge has no TWILIO_VOICE_FROM to call from")
    detection = fields.get("machine_detection")
    if detection is not None and detection not in MACHINE_DETECTION:
        raise BadField("machine_detection", f"must be {' or '.join(MACHINE_DETECTION)} (Twilio's MachineDetection), "
                                            "or left out")
    return CallOrder(to, settings.twilio_voice_from, _context(fields), detection)


def _fields(payload: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadField("request", "the body must be a JSON object, sent with Content-Type: application/json")
    if not all(_is_text(name) for name in payload):
        raise BadField("request", f"a field's name {NOT_TEXT}")
    unknown = sorted(set(payload) - known)
    if unknown:
        raise BadField(unknown[0], f"unknown field (known: {', '.join(sorted(known))})")
    for name, value in payload.items():
        _check_value(name, value)
    return payload


def _check_value(name: str, value: Any) -> None:
    """Refuse what JSON lets in but nothing here can let out: a lone surrogate (\\ud800, half of an emoji)
    cannot be encoded as UTF-8, so it could be neither stored as sent nor sent to Twilio; NaN and Infinity
    (1e999 is read as Infinity) would go to Twilio as "nan" and back to GET as JSON no client reads;
    a value nested deeper than MAX_NESTING, which the parser took, may still be too deep to be written
    back out (json.dumps recurses too). Every string and number is looked at, keys too, without recursion."""
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, str) and not _is_text(item):
            raise BadField(name, NOT_TEXT)
        if isinstance(item, float) and not math.isfinite(item):
            raise BadField(name, NOT_FINITE)
        if isinstance(item, (dict, list)) and level > MAX_NESTING:
            raise BadField(name, f"at most {MAX_NESTING} levels of objects and arrays")
        if isinstance(item, dict):
            pending.extend((part, level + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list):
            pending.extend((part, level + 1) for part in item)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadField(name, "required, a non-empty string")
    return value.strip()


def _variables(fields: dict[str, Any]) -> dict[str, str]:
    """Content API variables: {"1": "1234"}; numbers are taken as their text, anything else is refused."""
    raw = fields.get("variables", {})
    if not isinstance(raw, dict) or len(raw) > MAX_VARIABLES:
        raise BadField("variables", f"must be an object of at most {MAX_VARIABLES} template variables, "
                                    'such as {"1": "1234"}')
    variables = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BadField("variables", f"{key!r} must be a string or a number")
        text = str(value)
        if not key.strip() or not text.strip() or len(text) > VARIABLE_CHARACTERS:
            raise BadField("variables", f"{key!r} must be non-empty and at most {VARIABLE_CHARACTERS} characters")
        variables[key] = text
    return variables


def _context(fields: dict[str, Any]) -> dict[str, Any]:
    context = fields.get("context", {})
    if not isinstance(context, dict):
        raise BadField("context", "must be a JSON object")
    if len(json.dumps(context, ensure_ascii=False).encode()) > CONTEXT_BYTES:
        raise BadField("context", f"at most {CONTEXT_BYTES} bytes of JSON")
    return context
