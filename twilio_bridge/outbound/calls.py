"""Outbound calls: placed through Twilio's Calls API, their context found again when the customer answers,
their progress kept for `GET /api/outbound/calls/{id}`.

Twilio fetches the voice webhook when the customer answers; by then the Calls API has answered and the
context is stored under the call's sid, where `outbound_call_metadata` finds it (gather and relay mode
alike build a call's metadata with `voice.call.call_metadata`, which calls it). Status callbacks carry
the call's id in their URL and each write a key of their own: they may arrive in any order.
"""
from __future__ import annotations

from typing import Any

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioException
from werkzeug.datastructures import MultiDict

from .. import metrics, routes
from ..logs import log
from ..state import StateStore
from ..twilio_rest import twilio_client, twilio_failure
from . import ids
from .messages import RECORD_TTL, now_iso
from .orders import CallOrder

ID_PREFIX = "OC"
CALLS_TIMEOUT = 10.0
DIRECTION = "outbound-api"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Twilio's CallStatus values in the order they happen; the last five end the call.
PROGRESS = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3,
            "completed": 4, "busy": 4, "no-answer": 4, "failed": 4, "canceled": 4}
UNANSWERED = ("busy", "no-answer", "failed", "canceled")


class CallRefused(Exception):
    """Twilio did not place the call: `status` and `code` as Twilio answered (none when unreachable)."""

    def __init__(self, detail: str, status: int | None = None, code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code


class CallPlacer:
    """The Calls API client: one twilio `Client` (one requests session) per process."""

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str, public_base_url: str,
                 timeout: float = CALLS_TIMEOUT):
        self.client = twilio_client(account_sid, auth_token, api_base_url, timeout)
        self.public_base_url = public_base_url
        self.timeout = timeout

    def place(self, call_id: str, order: CallOrder) -> str:
        """Start the call; its sid. Raises CallRefused."""
        try:
            created = self.client.calls.create(
                to=order.to, from_=order.from_, method="POST",
                url=self.public_base_url + routes.VOICE,
                status_callback=f"{self.public_base_url}{routes.CALL_STATUS}?outbound={call_id}",
                status_callback_event=STATUS_EVENTS, status_callback_method="POST",
                machine_detection=order.machine_detection or values.unset,
            )
        except (TwilioException, requests.RequestException) as exc:
            failure = twilio_failure(exc, self.timeout)
            raise CallRefused(failure.detail, failure.status, failure.code) from exc
        return str(created.sid)


def record_key(call_id: str) -> str:
    return f"outbound:call:{call_id}"


def _sid_key(call_sid: str) -> str:
    return f"outbound:call-sid:{call_sid}"


def _progress_key(call_id: str, status: str) -> str:
    return f"outbound:call:{call_id}:status:{status}"


def remember_call(store: StateStore, call_id: str, order: CallOrder, call_sid: str) -> dict[str, Any]:
    """The Calls API answered: the context under the call's sid (for the voice webhook), the record under its id."""
    store.put(_sid_key(call_sid), {"id": call_id, "context": order.context}, RECORD_TTL)
    record = {"id": call_id, "to": order.to, "from": order.from_, "call_sid": call_sid, "context": order.context,
              "machine_detection": order.machine_detection, "created_at": now_iso()}
    store.put(record_key(call_id), record, RECORD_TTL)
    return record


def outbound_call_metadata(store: StateStore, call_sid: str | None) -> dict[str, Any]:
    """What a call the bridge placed adds to its session's metadata: the direction and the caller's context.
    Empty for any other call."""
    placed = store.get(_sid_key(call_sid)) if call_sid else None
    if placed is None:
        return {}
    return {"direction": DIRECTION, "outbound_id": placed["id"], "outbound_context": placed["context"]}


def record_status(store: StateStore, call_id: str | None, form: MultiDict[str, str]) -> dict[str, Any] | None:
    """A status callback of a call the bridge placed (its id rides in the URL): kept, and an unanswered
    end logged and counted. The call's record, or None when the bridge did not place this call."""
    record = ids.stored(store, ID_PREFIX, call_id, record_key)
    status = form.get("CallStatus", "")
    if record is None or status not in PROGRESS:
        return None
    progress = {"at": now_iso(), "answered_by": form.get("AnsweredBy"), "duration": form.get("CallDuration"),
                "sip_response_code": form.get("SipResponseCode"), "error_code": form.get("ErrorCode")}
    store.put(_progress_key(record["id"], status), {k: v for k, v in progress.items() if v}, RECORD_TTL)
    if PROGRESS[status] == 4:
        metrics.outbound_call_ended(status)
        if status in UNANSWERED:
            log.warning("outbound.call.unanswered", outbound_id=record["id"], call_status=status,
                        sip_response_code=form.get("SipResponseCode"))
    return record


def report(store: StateStore, call_id: str) -> dict[str, Any] | None:
    """What GET answers: the furthest status Twilio reported (queued until one did), and whether anyone answered."""
    record = ids.stored(store, ID_PREFIX, call_id, record_key)
    if record is None:
        return None
    reported = {status: store.get(_progress_key(call_id, status)) for status in PROGRESS if status != "queued"}
    seen = [status for status, found in reported.items() if found]
    status = max(seen, key=PROGRESS.__getitem__, default="queued")
    answered = "in-progress" in seen or "completed" in seen
    details: dict[str, Any] = {}
    for name in sorted(seen, key=PROGRESS.__getitem__):  # a later status's details win
        details.update(reported[name] or {})
    details.pop("at", None)
    shown = {key: record.get(key) for key in ("id", "to", "call_sid", "context", "machine_detection", "created_at")}
    return {**{k: v for k, v in shown.items() if v not in (None, {})}, "status": status, "answered": answered,
            **details}
