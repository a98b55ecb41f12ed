"""Prometheus metrics: what the bridge counts and times.

The bridge's code calls the small functions below, never prometheus_client directly, so every
name and label lives here (the scrape route is `web/metrics_endpoint.py`). Under gunicorn each worker writes
its samples to files in PROMETHEUS_MULTIPROC_DIR (set up by gunicorn.conf.py).
"""
from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter("twilio_bridge_webhooks", "Webhooks answered, by route and outcome", ["route", "outcome"])
WEBHOOK_SECONDS = Histogram(
    "twilio_bridge_webhook_seconds", "Time to answer a webhook (Twilio waits at most 15 s)", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 13, 15),
)
RASA_SECONDS = Histogram(
    "twilio_bridge_rasa_seconds", "Rasa REST latency, by result (ok, empty, timeout, unreachable, status, invalid)",
    ["result"], buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 13, 20, 30, 60, 120),
)
CALL_ENDINGS = Counter(
    "twilio_bridge_call_endings",
    "Calls leaving the assistant: ending is handoff (a <Dial> to a person) or hangup; reason says why",
    ["ending", "reason"],
)
FALLBACK_URL = Counter(
    "twilio_bridge_fallback_url", "Twilio called the number's Fallback URL: a primary webhook failed"
)
HOLDS = Counter(
    "twilio_bridge_voice_holds", "Slow voice turns: held (a holding phrase), answered after a hold, or given up",
    ["result"],
)
SIGNATURE_REJECTIONS = Counter(
    "twilio_bridge_signature_rejections", "Requests refused for a missing or wrong Twilio signature", ["route"]
)
WHATSAPP_QUEUE_DEPTH = Gauge(
    "twilio_bridge_whatsapp_queue_depth", "WhatsApp replies waiting to be delivered (the shared queue's length)",
    multiprocess_mode="mostrecent",
)
WHATSAPP_DELIVERIES = Counter(
    "twilio_bridge_whatsapp_deliveries", "WhatsApp reply deliveries through Twilio's REST API, by result", ["result"]
)
WHATSAPP_STATUSES = Counter(
    "twilio_bridge_whatsapp_statuses", "Status callbacks Twilio posted for the bridge's messages, by status",
    ["status"],
)
OUTBOUND_MESSAGES = Counter(
    "twilio_bridge_outbound_messages", "Outbound API messages sent through Twilio's Messages API, by result", ["result"]
)
OUTBOUND_CALLS = Counter(
    "twilio_bridge_outbound_calls",
    "Outbound API calls: placed or refused by the Calls API, then how they ended (completed, busy, no-answer…)",
    ["result"],
)

RELAY_SESSIONS_OPEN = Gauge(
    "twilio_bridge_relay_sessions_open", "Relay-mode calls (ConversationRelay WebSockets) open now",
    multiprocess_mode="livesum",
)
RELAY_SESSIONS = Counter(
    "twilio_bridge_relay_sessions",
    "Relay-mode sessions ended: outcome handoff, hangup or caller_hung_up; why: assistant, rasa_failed, silence...",
    ["outcome", "why"],
)
RELAY_TURNS = Counter("twilio_bridge_relay_turns", "Relay-mode turns sent to Rasa, by input (speech, dtmf, button)",
                      ["input"])
RELAY_INTERRUPTS = Counter("twilio_bridge_relay_interrupts", "Relay-mode replies the caller talked over")


def webhook_answered(route: str, outcome: str, seconds: float) -> None:
    count, seconds_taken = _webhook_series(route, outcome)
    count.inc()
    seconds_taken.observe(seconds)


def rasa_answered(result: str, seconds: float) -> None:
    _rasa_series(result).observe(seconds)


# Every webhook and every Rasa answer is counted: their series are found once, not by their labels each time.
# Labels come from small fixed sets (the app's routes, outcomes, HTTP statuses, Rasa's results), so these stay small.
@functools.lru_cache(maxsize=None)
def _webhook_series(route: str, outcome: str) -> tuple[Any, Any]:
    return WEBHOOKS.labels(route, outcome), WEBHOOK_SECONDS.labels(route)


@functools.lru_cache(maxsize=None)
def _rasa_series(result: str) -> Any:
    return RASA_SECONDS.labels(result)


def call_ended(ending: str, reason: str) -> None:
    """ending: "handoff" or "hangup"; reason: assistant, rasa_failed, silence, fallback_url, error..."""
    CALL_ENDINGS.labels(ending, reason).inc()


def fallback_url_called() -> None:
    FALLBACK_URL.inc()


def turn_held(result: str) -> None:
    """result: "held", "answered" or "gave_up"."""
    HOLDS.labels(result).inc()


def signature_rejected(route: str) -> None:
    SIGNATURE_REJECTIONS.labels(route).inc()


def whatsapp_queue_depth(depth: int) -> None:
    """Set at scrape time from the shared queue's length, so every worker, host and restart reads the same."""
    WHATSAPP_QUEUE_DEPTH.set(depth)


def whatsapp_delivered(result: str) -> None:
    """result: "sent", "retried" (429/5xx, tried again), "failed" (a 4xx such as 63016) or "expired"."""
    WHATSAPP_DELIVERIES.labels(result).inc()


def whatsapp_status_reported(status: str) -> None:
    """status: one of Twilio's message statuses (queued ... read, undelivered, failed) or "other"."""
    WHATSAPP_STATUSES.labels(status).inc()


def outbound_message_sent(result: str) -> None:
    """result: "sent", "retried" (429, 5xx, network), "failed" (a 4xx such as 63016) or "expired"."""
    OUTBOUND_MESSAGES.labels(result).inc()


def outbound_call_placed(result: str) -> None:
    """result: "placed" (the Calls API took it) or "refused"."""
    OUTBOUND_CALLS.labels(result).inc()


def outbound_call_ended(status: str) -> None:
    """status: Twilio's final CallStatus: completed, busy, no-answer, failed or canceled."""
    OUTBOUND_CALLS.labels(status).inc()


def relay_session_opened() -> None:
    RELAY_SESSIONS_OPEN.inc()


def relay_session_closed(outcome: str, why: str) -> None:
    RELAY_SESSIONS_OPEN.dec()
    RELAY_SESSIONS.labels(outcome, why).inc()


def relay_turn(input_kind: str) -> None:
    RELAY_TURNS.labels(input_kind).inc()


def relay_interrupted() -> None:
    RELAY_INTERRUPTS.inc()


WHATSAPP_BUTTONS = Counter(
    "twilio_bridge_whatsapp_buttons",
    "Questions with buttons in REST mode: sent as quick-reply or list-picker, or as a numbered list because "
    "they did not fit WhatsApp's buttons (unfit), the Content API failed (content_failed) or Twilio refused to "
    "send a template (template_refused)",
    ["result"],
)
WHATSAPP_TYPING = Counter(
    "twilio_bridge_whatsapp_typing", "Typing indicators posted for messages taken by a worker, by result", ["result"]
)
VOICE_NOTES = Counter(
    "twilio_bridge_whatsapp_voice_notes",
    "Voice notes: transcribed, or why not (foreign_host, too_big, download, undecodable, too_long, empty, engine)",
    ["result"],
)
TRANSCRIPTION_SECONDS_PER_AUDIO_SECOND = Histogram(
    "twilio_bridge_transcription_seconds_per_audio_second", "Time spent transcribing one second of a voice note",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 4),
)


def whatsapp_buttons(result: str) -> None:
    """result: "quick-reply", "list-picker", "unfit", "content_failed", or "template_refused" (Twilio refused
    to send a template it had made: sent as text instead)."""
    WHATSAPP_BUTTONS.labels(result).inc()


def whatsapp_typing(result: str) -> None:
    """result: "shown" or "failed"."""
    WHATSAPP_TYPING.labels(result).inc()


def voice_note_heard(result: str, audio_seconds: float = 0.0, took: float = 0.0) -> None:
    """result: "transcribed", or the reason it was not; a transcription's speed is observed too."""
    VOICE_NOTES.labels(result).inc()
    if result == "transcribed" and audio_seconds > 0:
        TRANSCRIPTION_SECONDS_PER_AUDIO_SECOND.observe(took / audio_seconds)
