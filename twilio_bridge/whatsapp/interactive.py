"""WhatsApp buttons people tap: a question with Rasa's buttons as a Content API template.

Up to 3 buttons become a `twilio/quick-reply`, 4 to 10 a `twilio/list-picker`. Each button's id is
its payload, so a tap comes back (ButtonPayload, ListId) as exactly what Rasa offered, whatever the
title had to be shortened to. The question itself is the template's one variable, so one template
serves every question with the same buttons; templates are created once through the Content API and
their sids kept in the state store under a hash of their content, for every worker and host to reuse.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import requests
import structlog
from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList

from .. import metrics
from ..limits import (
    CONTENT_ID,
    LIST_BUTTON,
    LIST_ITEM,
    LIST_ITEM_DESCRIPTION,
    LIST_ITEMS,
    MESSAGE_CHARACTERS,
    QUICK_REPLY_BUTTONS,
    QUICK_REPLY_TITLE,
)
from ..logs import log
from ..rasa.turn import Button
from ..state import StateStore
from ..text import without_markup
from ..twilio_rest import twilio_failure
from .replies import Outgoing, numbered_menu

TEMPLATE_TTL = 30 * 24 * 3600  # a template deleted at Twilio is made again within a month
QUESTION = "{{1}}"


class ContentError(Exception):
    """The Content API did not create the template; the reply falls back to the numbered list."""


def content_sid_key(content_sid: str) -> str:
    """The store key that remembers which template (its whatsapp:content: key) `content_sid` was made for."""
    return f"whatsapp:content-key:{content_sid}"


def forget_template(store: StateStore, content_sid: str) -> None:
    """Twilio refused this template (deleted in the console?): the next question with its buttons makes a new one."""
    cached = store.get(content_sid_key(content_sid))
    if cached:
        store.delete(cached["key"])
    store.delete(content_sid_key(content_sid))


def fit(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: cut after a whole word, marked with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if text[limit - 1] != " " and " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,.;:-") + "…"


def template_types(buttons: Sequence[Button], list_label: str) -> dict[str, Any] | None:
    """The Content API `types` for these buttons, or None when WhatsApp cannot show them as buttons. A button
    shows its title as it is, so markdown's marks ("**Sí**") are taken off it (`without_markup`)."""
    if not 1 <= len(buttons) <= LIST_ITEMS or any(len(b.payload) > CONTENT_ID for b in buttons):
        return None
    if len({b.payload for b in buttons}) < len(buttons):
        return None
    shown = [without_markup(b.title) for b in buttons]
    if not all(title.strip() for title in shown):  # markup alone ("<b></b>"): WhatsApp refuses an empty title
        return None
    if len(buttons) <= QUICK_REPLY_BUTTONS:
        titles = [fit(title, QUICK_REPLY_TITLE) for title in shown]
        kind = {"twilio/quick-reply": {"body": QUESTION, "actions": [
            {"title": title, "id": b.payload} for title, b in zip(titles, buttons)]}}
    else:
        titles = [fit(title, LIST_ITEM) for title in shown]
        kind = {"twilio/list-picker": {"body": QUESTION, "button": fit(list_label, LIST_BUTTON), "items": [
            {"item": title, "id": b.payload, "description": fit(whole, LIST_ITEM_DESCRIPTION)}
            for title, whole, b in zip(titles, shown, buttons)]}}
    if len(set(titles)) < len(titles):  # WhatsApp refuses two buttons with one title
        return None
    return kind


class ContentTemplates:
    """Questions with buttons as Content API templates, shared through the state store."""

    def __init__(self, client: Client, store: StateStore, language: str, list_label: str):
        self.client = client
        self.store = store
        self.language = language
        self.list_label = list_label

    def ask(self, question: str, buttons: Sequence[Button]) -> Outgoing | None:
        """The question as a message with buttons to tap; None (list them as text) when they do not fit
        WhatsApp's buttons, the question and its list do not fit in the one message sent instead should
        Twilio refuse the template, or the Content API fails."""
        fallback = f"{question}\n\n{numbered_menu(buttons)}"
        types = template_types(buttons, self.list_label) if len(fallback) <= MESSAGE_CHARACTERS else None
        if types is None:
            metrics.whatsapp_buttons("unfit")
            log.info("whatsapp.buttons.as_text", reason="unfit", buttons=len(buttons))
            return None
        try:
            sid = self.sid_for(types)
        except ContentError as exc:
            metrics.whatsapp_buttons("content_failed")
            log.warning("whatsapp.buttons.content_failed", detail=str(exc))
            return None
        kind = next(iter(types)).removeprefix("twilio/")
        metrics.whatsapp_buttons(kind)
        structlog.contextvars.bind_contextvars(buttons=kind)
        return Outgoing(content_sid=sid, content_variables={"1": question},
                        fallback_body=fallback)

    def sid_for(self, types: dict[str, Any]) -> str:
        """The template's sid, created at Twilio the first time these exact buttons are asked. Raises ContentError."""
        content = {"language": self.language, "types": types}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        key = f"whatsapp:content:{digest}"
        cached = self.store.get(key)
        if cached:
            return str(cached["sid"])
        request = ContentList.ContentCreateRequest({
            "friendly_name": f"twilio_bridge_{digest[:16]}", "language": self.language,
            "variables": {"1": "?"}, "types": types})
        try:
            created = self.client.content.v1.contents.create(request)
        except (TwilioException, requests.RequestException) as exc:
            raise ContentError(str(twilio_failure(exc))) from exc
        except (ValueError, AttributeError) as exc:  # a 2xx that is not a JSON object (a proxy's page)
            raise ContentError(f"the Content API's answer is not a template ({type(exc).__name__})") from exc
        if not created.sid:
            raise ContentError("the Content API answered without a sid")
        self.store.put(key, {"sid": created.sid}, TEMPLATE_TTL)
        self.store.put(content_sid_key(created.sid), {"key": key}, TEMPLATE_TTL)
        log.info("whatsapp.content.created", content_sid=created.sid, kind=next(iter(types)))
        return str(created.sid)
