"""WhatsApp in REST mode as people expect it: buttons to tap, "typing…", and voice notes understood.

What a background worker adds to a conversation; built once per process by the delivery workers,
each part only when its setting turns it on (WHATSAPP_BUTTONS, WHATSAPP_TRANSCRIBE).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from ..phrases import phrases_for
from ..state import StateStore
from ..twilio_rest import twilio_client
from .interactive import ContentTemplates
from .typing_indicator import TypingIndicator
from .hearing import HostTranscriber
from .voice_notes import MediaFetcher, VoiceNotes

TWILIO_TIMEOUT = 5.0  # the Content API and the typing indicator: a hung one must not hold a reply for long


@dataclass(frozen=True)
class NativeFeatures:
    templates: ContentTemplates | None = None  # questions with buttons as quick replies and list pickers
    typing: TypingIndicator | None = None
    voice_notes: VoiceNotes | None = None


def native_features(settings: Settings, store: StateStore, webhooks_first: Callable[[], None] = lambda: None) -> NativeFeatures:
    """`webhooks_first`: what "typing…" waits for before each post (the process's webhooks in hand)."""
    assert settings.twilio_account_sid and settings.twilio_auth_token
    sid, token, api = settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url
    client = twilio_client(sid, token, api, TWILIO_TIMEOUT)
    templates = None
    if settings.whatsapp_buttons == "interactive":
        options = phrases_for(settings.voice_language).chat_options
        templates = ContentTemplates(client, store, settings.language_code, options)
    voice_notes = None
    if settings.whatsapp_transcribe:
        transcriber = HostTranscriber(settings.whatsapp_transcribe_model, settings.transcribe_language, settings.log_level)
        voice_notes = VoiceNotes(MediaFetcher(api, sid, token), transcriber)
    return NativeFeatures(templates, TypingIndicator(client, webhooks_first=webhooks_first), voice_notes)
