"""One chat user's conversation with Rasa (sender = the `From` address), shared by both reply modes.

An inbound message as Twilio posted it is kept as an `Inbound`, which is what the queue stores:
the message Rasa gets is decided only when its turn comes, against the menu the user had then.
In REST mode a worker's conversation also shows "typing…", hears voice notes and asks with buttons
to tap (`NativeFeatures`).
"""
from __future__ import annotations

import dataclasses
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from ..bridge import Bridge
from ..logs import log
from ..outbound.messages import forget_last_notification, with_last_notification
from ..phrases import Phrases, phrases_for
from ..rasa.menu import choose_button
from ..rasa.turn import AssistantTurn, Button, read_turn
from ..text import from_user
from .native import NativeFeatures
from .replies import Outgoing, apology, render_turn
from .voice_notes import Unheard, voice_note_url

MENU_TTL = 7 * 24 * 3600
MAX_MEDIA = 10


@dataclass(frozen=True)
class Inbound:
    sid: str
    user: str
    to: str
    body: str = ""
    button_payload: str | None = None
    media: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)  # account, profile name, WaId, location
    heard_language: str | None = None  # set when the body is a voice note's transcript

    @classmethod
    def from_form(cls, form: MultiDict[str, str]) -> Inbound:
        media = []
        for index in range(min(_int(form.get("NumMedia")), MAX_MEDIA)):
            url = form.get(f"MediaUrl{index}")
            if url:
                media.append({"url": url, "content_type": form.get(f"MediaContentType{index}", "")})
        names = {"AccountSid": "account_sid", "ProfileName": "profile_name", "WaId": "wa_id",
                 "ButtonText": "button_text", "ListTitle": "list_title", "Latitude": "latitude", "Longitude": "longitude",
                 "Address": "address", "Label": "label"}
        details = {key: form[name] for name, key in names.items() if form.get(name)}
        # Twilio always sends a MessageSid; without one, the message must not pass for another sid-less one
        message_sid = form.get("MessageSid") or form.get("SmsSid") or "unknown-" + secrets.token_hex(8)
        return cls(sid=message_sid, user=form.get("From", ""),
                   to=form.get("To", ""), body=form.get("Body", ""),
                   button_payload=form.get("ButtonPayload") or form.get("ListId") or None,  # quick reply, list picker
                   media=media, details=details)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Inbound:
        return cls(**raw)

    def as_dict(self) -> dict[str, Any]:
        """Its fields, for the queue's JSON: shallow, where `asdict` copies every list and dict (11 µs against 0.6)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def channel(self) -> str:
        return "whatsapp" if self.user.startswith("whatsapp:") else "sms"

    def metadata(self, kind: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"channel": self.channel, "message_sid": self.sid, "from": self.user,
                                    "to": self.to, "input": kind, **self.details}
        if self.media:
            metadata["media"] = self.media
        if self.button_payload:  # also a tap Rasa did not offer (an operator's template): the text goes as text
            metadata["button_payload"] = self.button_payload
        if self.heard_language:
            metadata["language"] = self.heard_language
        return metadata


class Conversation:
    def __init__(self, current: Bridge, user: str, native: NativeFeatures | None = None):
        self.current = current
        self.user = user
        self.native = native or NativeFeatures()

    @property
    def menu_key(self) -> str:
        return f"whatsapp:menu:{self.user}"

    def menu(self) -> list[Button]:
        """The buttons of the assistant's last turn to this user, which a reply may choose from."""
        return [Button(**b) for b in (self.current.store.get(self.menu_key) or {}).get("buttons", [])]

    def message_for(self, inbound: Inbound, buttons: list[Button]) -> tuple[str, str]:
        """What Rasa gets and how the user said it. Only a payload Rasa offered may start with '/'."""
        offered = next((b for b in buttons if b.payload == inbound.button_payload), None)
        text = from_user(inbound.body)
        choice = offered or choose_button(text, buttons)
        spoken = inbound.heard_language is not None
        if choice is not None:
            return choice.payload, "voice_note" if spoken else "button"
        if text:
            return text, "voice_note" if spoken else "text"
        if inbound.media:
            return "", "media"
        return "", "location" if "latitude" in inbound.details else "text"

    def reply(self, inbound: Inbound, rasa_timeout: float | None = None) -> list[Outgoing]:
        """Ask Rasa, giving it `rasa_timeout` seconds (RASA_TIMEOUT); the messages to send back. Raises RasaError;
        an empty answer gets the apology, a voice note that cannot be heard a request to write instead (and
        Rasa gets nothing)."""
        whatsapp = inbound.channel == "whatsapp"
        typing = self.native.typing.show(inbound.sid) if whatsapp and self.native.typing is not None else None
        try:
            return self._answer(inbound, rasa_timeout, whatsapp)
        finally:
            if typing is not None:  # still waiting for its turn: after the reply it would promise more, for 25 s
                typing.cancel()

    def _answer(self, inbound: Inbound, rasa_timeout: float | None, whatsapp: bool) -> list[Outgoing]:
        heard = self.transcribed(inbound)
        if heard is None:
            return [Outgoing(self.phrases.voice_note_unheard)]
        inbound = heard
        menu = self.menu()
        message, kind = self.message_for(inbound, menu)
        metadata = with_last_notification(self.current.store, self.user, inbound.metadata(kind))
        turn = read_turn(self.current.ask_rasa(self.user, message, metadata, rasa_timeout))
        # Rasa has run the dialogue: nothing that fails from here may raise, or the delivery would ask it again.
        try:
            self._remember(turn, menu, metadata)
        except Exception as exc:  # the store: the reply goes out, and the next message may miss this one's menu
            log.warning("whatsapp.after_rasa.unrecorded", error=type(exc).__name__, detail=str(exc)[:200])
        if turn.is_empty:
            return self.apology()
        ask = self.native.templates.ask if whatsapp and self.native.templates is not None else None
        try:
            return render_turn(turn, self.phrases, self.current.settings.fallback_phone_number, ask)
        except Exception:
            log.exception("whatsapp.render_failed")
            return self.apology()

    def _remember(self, turn: AssistantTurn, menu: list[Button], metadata: dict[str, Any]) -> None:
        """What the next message needs from this turn: its menu to choose from; the notification answered, forgotten."""
        forget_last_notification(self.current.store, self.user, metadata)
        if turn.buttons:
            self.current.store.put(self.menu_key, {"buttons": [asdict(b) for b in turn.buttons]}, MENU_TTL)
        elif menu:  # most turns offer no menu and follow none: they write nothing
            self.current.store.delete(self.menu_key)

    def transcribed(self, inbound: Inbound) -> Inbound | None:
        """A voice note (audio without text) with its transcript as the text, when voice notes are heard;
        None when it cannot be heard; any other message as it is."""
        url = voice_note_url(inbound.media) if not inbound.body.strip() else None
        if url is None or self.native.voice_notes is None:
            return inbound
        try:
            heard = self.native.voice_notes.hear(url)
        except Unheard:
            return None
        return dataclasses.replace(inbound, body=heard.text, heard_language=heard.language)

    def apology(self) -> list[Outgoing]:
        return apology(self.phrases, self.current.settings.fallback_phone_number)

    @property
    def phrases(self) -> Phrases:
        return phrases_for(self.current.settings.voice_language)


def _int(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0
