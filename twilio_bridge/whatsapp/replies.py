"""WhatsApp and SMS replies: pure functions from the assistant's turn to outgoing messages and TwiML.

The same list of `Outgoing` messages is either put in the webhook's answer as <Message>s (TwiML
mode) or sent one by one through Twilio's Messages API (REST mode), where a question with buttons
may instead be one Content API template (`ContentSid`, with the question in its variables).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Sequence
from xml.sax.saxutils import escape

from twilio.twiml.messaging_response import MessagingResponse

from ..limits import CONTENT_BODY, MESSAGE_CHARACTERS, TWIML_BYTES, TWIML_MESSAGES
from ..logs import log
from ..phrases import Phrases
from ..rasa.turn import AssistantTurn, Button
from ..text import for_whatsapp, split_message


@dataclass(frozen=True)
class Outgoing:
    """One message: a body and/or a media URL, or a Content API template with its variables (and the text
    to send instead should Twilio refuse the template)."""
    body: str = ""
    media_url: str | None = None
    content_sid: str | None = None
    content_variables: dict[str, str] | None = None
    fallback_body: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Outgoing:
        return cls(raw.get("body", ""), raw.get("media_url"), raw.get("content_sid"), raw.get("content_variables"),
                   raw.get("fallback_body"))


# Asks a question with tappable buttons: the message that does, or None to list them as numbered text.
AskWithButtons = Callable[[str, Sequence[Button]], "Outgoing | None"]


def numbered_menu(buttons: Sequence[Button]) -> str:
    return "\n".join(f"{number}. {for_whatsapp(button.title)}" for number, button in enumerate(buttons, 1))


def render_turn(turn: AssistantTurn, phrases: Phrases, fallback_number: str | None,
                ask_with_buttons: AskWithButtons | None = None) -> list[Outgoing]:
    """The assistant's words in as few bodies as fit (one message arrives in one piece), then its images.

    Buttons are a numbered list after the words, unless `ask_with_buttons` makes the last paragraph
    (the question) a message with buttons to tap. A hangup directive has nothing to hang up in a chat:
    its text is simply sent.
    """
    paragraphs = [for_whatsapp(text) for text in turn.texts]
    asked = None
    if turn.buttons and ask_with_buttons is not None and paragraphs and paragraphs[-1]:
        *before, question = split_message(paragraphs[-1], CONTENT_BODY)
        asked = ask_with_buttons(question, turn.buttons)
        if asked is not None:
            paragraphs[-1:] = before
    if turn.buttons and asked is None:
        paragraphs.append(numbered_menu(turn.buttons))
    if turn.handoff:
        number = turn.handoff_number or fallback_number
        paragraphs.append(phrases.chat_handoff.format(number=number) if number else phrases.chat_no_person)
    bodies = split_message("\n\n".join(p for p in paragraphs if p), MESSAGE_CHARACTERS)
    return ([Outgoing(body) for body in bodies] + ([asked] if asked else [])
            + [Outgoing(media_url=url) for url in turn.images])


def apology(phrases: Phrases, fallback_number: str | None) -> list[Outgoing]:
    """What a user gets when the assistant cannot answer: an apology, and a person to call when there is one."""
    words = [phrases.chat_trouble]
    if fallback_number:
        words.append(phrases.chat_handoff.format(number=fallback_number))
    return [Outgoing(" ".join(words))]


def messaging_twiml(messages: Sequence[Outgoing]) -> MessagingResponse:
    """The messages as a webhook's answer, as many as Twilio sends from one: TWIML_MESSAGES, in TWIML_BYTES.
    What a longer answer (REST mode sends it all) has beyond that is left out and logged: a larger document
    would be refused whole (11750), and the user would get nothing."""
    response = MessagingResponse()
    size = len('<?xml version="1.0" encoding="UTF-8"?><Response></Response>')
    for kept, outgoing in enumerate(messages):
        size += _message_bytes(outgoing)
        if kept == TWIML_MESSAGES or size > TWIML_BYTES:
            log.warning("whatsapp.twiml.cut", messages=len(messages), kept=kept)
            break
        message = response.message(outgoing.body or None)
        if outgoing.media_url:
            message.media(outgoing.media_url)
    return response


def _message_bytes(outgoing: Outgoing) -> int:
    """At least what one <Message> takes in the document: its tags, body and media URL, escaped."""
    media = f"<Media>{escape(outgoing.media_url)}</Media>" if outgoing.media_url else ""
    return len(f"<Message><Body>{escape(outgoing.body)}</Body>{media}</Message>".encode())
