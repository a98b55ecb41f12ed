"""Outbound messages: queued durably like replies, in the user's own lane (so in order with them), their
outcome kept for `GET /api/outbound/messages/{id}`, and what was sent handed to Rasa with the user's next message.

A message's record is written by the API when it is queued and then only by the worker that sends it
(one at a time: the user's lane); Twilio's status callbacks each write a key of their own, so two of
them arriving together, or before the worker's record, never undo one another.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from werkzeug.datastructures import MultiDict

from ..delivery.queue import JobQueue
from ..state import StateStore
from ..whatsapp.replies import Outgoing
from . import ids
from .orders import MessageOrder

ID_PREFIX = "OM"
RECORD_TTL = 7 * 24 * 3600
NOTIFICATION_TTL = 7 * 24 * 3600  # a reply days later still answers the last notification
# Twilio's statuses after it took the message, in the order they happen; failures end it.
REPORTED = {"sent": 1, "delivered": 2, "read": 3, "undelivered": 4, "failed": 4}
FAILURES = ("undelivered", "failed")


def record_key(message_id: str) -> str:
    return f"outbound:message:{message_id}"


def _reported_key(message_id: str, status: str) -> str:
    return f"outbound:message:{message_id}:twilio:{status}"


def _notification_key(user: str) -> str:
    return f"outbound:notified:{user}"


def now_iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(at or time.time(), timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def queue_message(store: StateStore, queue: JobQueue, message_id: str, order: MessageOrder) -> bool:
    """Store the record, then the job in the user's lane; False when this id was queued before (a repeat)."""
    record = {"id": message_id, "to": order.to, "from": order.from_, "channel": order.channel,
              "content_sid": order.content_sid, "variables": order.variables, "body": order.body,
              "context": order.context, "status": "queued", "created_at": now_iso()}
    # Only a retry after a crash finds the record there (an id is this request's alone), maybe without its job.
    store.add(record_key(message_id), record, RECORD_TTL)
    return queue.enqueue(message_id, order.to, {"outbound": message_id})


def outgoing_of(record: dict[str, Any]) -> Outgoing:
    if record.get("content_sid"):
        return Outgoing(content_sid=record["content_sid"], content_variables=record.get("variables") or None)
    return Outgoing(record.get("body") or "")


def mark_sent(store: StateStore, record: dict[str, Any], twilio_sid: str) -> None:
    """Twilio took it: kept for GET, and remembered as the user's last notification unless it already failed."""
    sent_at = now_iso()
    store.put(record_key(record["id"]), {**record, "status": "sent", "twilio_sid": twilio_sid, "sent_at": sent_at},
              RECORD_TTL)
    notification = {"message_id": record["id"], "content_sid": record.get("content_sid"),
                    "variables": record.get("variables") or {}, "context": record.get("context") or {},
                    "sent_at": sent_at}
    if record.get("body"):
        notification["body"] = record["body"]
    store.put(_notification_key(record["to"]), notification, NOTIFICATION_TTL)
    # Twilio's callbacks may come before this write: each side writes, then looks for the other's write.
    if any(store.get(_reported_key(record["id"], failure)) for failure in FAILURES):
        _forget_notification(store, record["to"], record["id"])


def mark_failed(store: StateStore, record: dict[str, Any], error_code: int | None, error: str) -> None:
    store.put(record_key(record["id"]), {**record, "status": "failed", "error_code": error_code, "error": error,
                                         "failed_at": now_iso()}, RECORD_TTL)


def record_status(store: StateStore, message_id: str | None, form: MultiDict[str, str]) -> None:
    """A status callback for a message the outbound API sent (its id rides in the callback's URL). A message
    that never reached the user is not what their next message answers."""
    status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    record = ids.stored(store, ID_PREFIX, message_id, record_key)
    if record is None or status not in REPORTED:
        return
    reported = {"at": now_iso(), "error_code": _int(form.get("ErrorCode"))}
    store.put(_reported_key(record["id"], status), reported, RECORD_TTL)
    if status in FAILURES:
        _forget_notification(store, record["to"], record["id"])


def report(store: StateStore, message_id: str) -> dict[str, Any] | None:
    """What GET answers: queued, sent, delivered, read or failed (with Twilio's error code), and the request."""
    record = ids.stored(store, ID_PREFIX, message_id, record_key)
    if record is None:
        return None
    status, error_code = record["status"], record.get("error_code")
    if status == "sent":
        reported = {name: store.get(_reported_key(message_id, name)) for name in REPORTED}
        latest = max((name for name, found in reported.items() if found), key=REPORTED.__getitem__, default=None)
        if latest is not None:
            status = "failed" if REPORTED[latest] == 4 else latest
            error_code = (reported[latest] or {}).get("error_code")
    shown = {key: record.get(key) for key in ("id", "to", "channel", "content_sid", "variables", "body", "context",
                                              "created_at", "sent_at", "twilio_sid", "error")}
    return {**{k: v for k, v in shown.items() if v not in (None, {})}, "status": status, "error_code": error_code}


def with_last_notification(store: StateStore, user: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a user's message, with what the business last sent them when it is still unanswered."""
    notification = store.get(_notification_key(user))
    return {**metadata, "last_notification": notification} if notification else metadata


def forget_last_notification(store: StateStore, user: str, metadata: dict[str, Any]) -> None:
    """Rasa has had the user's answer to it: the next message goes without it (unless a newer one was sent)."""
    answered = metadata.get("last_notification")
    if answered:
        _forget_notification(store, user, answered["message_id"])


def _forget_notification(store: StateStore, user: str, message_id: str) -> None:
    """The user's last notification is forgotten if it is still this message (a newer one stays)."""
    if (store.get(_notification_key(user)) or {}).get("message_id") == message_id:
        store.delete(_notification_key(user))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
