"""Outbound calls: placed through Twilio's Calls API, their context found again when the customer answers,
their progress kept for `GET /api/outbound/calls/{id}`.

Twilio's callbacks for a call do not wait for the Calls API's answer to reach the bridge: the first status
callbacks, and a quickly answered call's voice webhook, may come before it. So nothing waits for it either:
the call's record is stored under its id before Twilio is asked, and the id rides in the URL of the voice
webhook and of the status callbacks alike. The voice webhook finds the context by that id
(`outbound_call_metadata`; gather and relay mode alike build a call's metadata with `voice.call.call_metadata`,
which calls it); once the Calls API has answered, the context is under the call's sid too, for whoever knows
only the sid. Status callbacks each write a key of their own: they may arrive in any order.
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
                url=f"{self.public_base_url}{routes.VOICE}?outbound={call_id}",
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


def remember_call(store: StateStore, call_id: str, order: CallOrder) -> dict[str, Any]:
    """Before the Calls API is asked: the record under the call's id, without a sid yet, so that whatever Twilio
    sends for the call before its answer (status callbacks, the voice webhook) finds it."""
    record = {"id": call_id, "to": order.to, "from": order.from_, "context": order.context,
              "machine_detection": order.machine_detection, "created_at": now_iso()}
    store.put(record_key(call_id), record, RECORD_TTL)
    return record


def mark_placed(store: StateStore, record: dict[str, Any], call_sid: str) -> None:
    """The Calls API answered: the context under the call's sid too, and the sid in the record."""
    store.put(_sid_key(call_sid), {"id": record["id"], "context": record["context"]}, RECORD_TTL)
    store.put(record_key(record["id"]), {**record, "call_sid": call_sid}, RECORD_TTL)


def mark_refused(store: StateStore, record: dict[str, Any], refusal: CallRefused) -> None:
    """The Calls API did not place the call: GET says failed, with Twilio's code, rather than queued for ever.
    The record stays: an answer lost on its way back (no answer in time) may hide a call Twilio did place,
    whose callbacks and voice webhook still find it."""
    store.put(record_key(record["id"]), {**record, "error_code": refusal.code, "error": refusal.detail,
                                         "refused_at": now_iso()}, RECORD_TTL)


def outbound_call_metadata(store: StateStore, call_sid: str | None, call_id: str | None = None) -> dict[str, Any]:
    """What a call the bridge placed adds to its session's metadata: the direction and the caller's context.
    Found by the id the voice webhook's URL carries (`call_id`), there before the Calls API answers; else by
    the call's sid, once it has. Empty for any other call."""
    placed = ids.stored(store, ID_PREFIX, call_id, record_key)
    if placed is None and call_sid:
        placed = store.get(_sid_key(call_sid))
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
    """What GET answers: the furthest status Twilio reported (queued until one did, failed when the Calls API
    refused the call and Twilio never reported it after all), and whether anyone answered."""
    record = ids.stored(store, ID_PREFIX, call_id, record_key)
    if record is None:
        return None
    reported = {status: store.get(_progress_key(call_id, status)) for status in PROGRESS if status != "queued"}
    seen = [status for status, found in reported.items() if found]
    refused = not seen and "refused_at" in record
    status = max(seen, key=PROGRESS.__getitem__, default="failed" if refused else "queued")
    answered = "in-progress" in seen or "completed" in seen
    details: dict[str, Any] = {"error_code": record["error_code"], "error": record["error"]} if refused else {}
    for name in sorted(seen, key=PROGRESS.__getitem__):  # a later status's details win
        details.update(reported[name] or {})
    details.pop("at", None)
    shown = {key: record.get(key) for key in ("id", "to", "call_sid", "context", "machine_detection", "created_at")}
    return {**{k: v for k, v in shown.items() if v not in (None, {})}, "status": status, "answered": answered,
            **{k: v for k, v in details.items() if v is not None}}
