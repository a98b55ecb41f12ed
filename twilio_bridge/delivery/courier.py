"""REST mode: what a background worker does with one queued message, each step saved before the next.

A job first gets Rasa's answer, waited for up to WHATSAPP_RETRY_WINDOW (asked again with backoff within
that window only when Rasa never had the message, else the dialogue would run twice; then an apology),
which is stored with the job; then its messages go out one by one, each recorded as sent before the
next. A worker killed at any point leaves the job in the queue, and whoever takes it over resumes
at the step that was not recorded: Rasa is asked again only if its answer was never stored, and
a message is sent twice only if the process died between Twilio's "created" and the record of it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from .. import metrics, routes
from ..bridge import Bridge
from ..logs import log
from ..outbound import messages as outbound_messages
from ..rasa.client import RasaError
from ..state import COUNTER_TTL
from ..whatsapp.conversation import Conversation, Inbound
from ..whatsapp.interactive import forget_template
from ..whatsapp.native import NativeFeatures, native_features
from ..whatsapp.replies import Outgoing
from .queue import Job, JobQueue
from .sender import WINDOW_CLOSED, MessageSender, SendError
from .workers import LaneWorkers, WebhooksFirst

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
MAX_CRASHES = 3


class Courier:
    def __init__(self, current: Bridge, queue: JobQueue, sender: MessageSender, native: NativeFeatures | None = None):
        self.current = current
        self.queue = queue
        self.sender = sender
        self.native = native
        base = current.settings.public_base_url
        self.status_callback = base + routes.WHATSAPP_STATUS if base else None

    def deliver(self, job: Job) -> None:
        """The worker's handler: one log line per attempt, whatever happened."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(message_sid=job.id, user=job.user)
        started = time.monotonic()
        try:
            outcome = self._notify(job) if "outbound" in job.data else self._run(job)
        except Exception:
            log.exception("whatsapp.delivery.crashed")
            outcome = self._crashed(job)
        log.info("whatsapp.delivery", outcome=outcome, attempts=job.data.get("attempts", 0),
                 sent=job.data.get("sent", 0), ms=round((time.monotonic() - started) * 1000))

    def _run(self, job: Job) -> str:
        data = job.data
        inbound = Inbound.from_dict(data["inbound"])
        outcome = "delivered"
        if "outgoing" not in data:
            conversation = Conversation(self.current, job.user, self.native)
            try:  # its wait for Rasa leaves the working slot to another delivery
                outgoing = conversation.reply(inbound, self._time_for_rasa(job))
            except RasaError as exc:
                log.warning("rasa.failed", kind=exc.kind, detail=exc.detail, resendable=exc.resendable)
                # a message Rasa may have acted on is never sent again: that would run the dialogue twice
                if exc.resendable and self._retry_later(job, f"rasa_{exc.kind}", detail=exc.detail):
                    return "rasa_retry"
                outgoing, outcome = conversation.apology(), "apology"
            data.update(outgoing=[message.as_dict() for message in outgoing], sent=0)
            _streak_over(data)
            if not self.queue.save(job):
                return "lease_lost"
        return self._send_all(job, inbound) or outcome

    def _time_for_rasa(self, job: Job) -> float:
        """What is left of the retry window, RASA_TIMEOUT at least: a delivery answers no webhook, and a
        message Rasa may have is not sent again, so Rasa gets all the time the job has."""
        settings, failing_since = self.current.settings, job.data.get("failing_since")
        left = settings.whatsapp_retry_window - (time.time() - failing_since if failing_since else 0.0)
        return max(settings.rasa_timeout, left)

    def _send_all(self, job: Job, inbound: Inbound) -> str | None:
        """Send what is left; None when all went out, else why it stopped."""
        data = job.data
        messages = [Outgoing.from_dict(raw) for raw in data["outgoing"]]
        from_ = self._from(inbound)
        while data["sent"] < len(messages):
            try:
                sid = self.sender.send(job.user, from_, messages[data["sent"]], self.status_callback)
                log.info("whatsapp.sent", twilio_sid=sid, index=data["sent"])
                _counted(metrics.whatsapp_delivered, "sent")
                self._count("whatsapp:sent")
            except SendError as exc:
                self._count("whatsapp:send_errors", f"whatsapp:send_error:{exc.code or exc.status or 'network'}")
                if exc.retryable and self._retry_later(job, "twilio", status=exc.status, code=exc.code,
                                                       detail=exc.detail):
                    _counted(metrics.whatsapp_delivered, "retried")
                    return "send_retry"
                message = messages[data["sent"]]
                if not exc.retryable and exc.code != WINDOW_CLOSED and message.content_sid and message.fallback_body:
                    messages[data["sent"]] = self._without_template(job, message, exc)
                    continue
                _counted(metrics.whatsapp_delivered, "expired" if exc.retryable else "failed")
                log.error("whatsapp.send.failed", status=exc.status, code=exc.code, detail=exc.detail,
                          retryable=exc.retryable, index=data["sent"])
                if exc.retryable or exc.code == WINDOW_CLOSED:  # out of time, or every message would fail alike
                    self.queue.finish(job)
                    return "gave_up" if exc.retryable else "window_closed"
            data["sent"] += 1
            _streak_over(data)
            if data["sent"] < len(messages) and not self.queue.save(job):  # after the last one, finish says it
                return "lease_lost"
        self.queue.finish(job)
        return None

    def _from(self, inbound: Inbound) -> str:
        """The address replies to `inbound` come from: the WhatsApp sender, or for SMS the number it was sent to."""
        whatsapp_from = self.current.settings.twilio_whatsapp_from
        return whatsapp_from if whatsapp_from and inbound.channel == "whatsapp" else inbound.to

    def _without_template(self, job: Job, message: Outgoing, exc: SendError) -> Outgoing:
        """Twilio refused a question's buttons: the same question as text, at once, and its template forgotten
        (best-effort, as counters are: the question must go out even when the store cannot be written)."""
        assert message.content_sid and message.fallback_body
        log.warning("whatsapp.buttons.template_refused", content_sid=message.content_sid, code=exc.code,
                    detail=exc.detail)
        _counted(metrics.whatsapp_buttons, "template_refused")
        try:
            forget_template(self.current.store, message.content_sid)
        except Exception as error:
            log.warning("whatsapp.buttons.forget_failed", error=type(error).__name__, detail=str(error)[:200])
        as_text = Outgoing(message.fallback_body)
        job.data["outgoing"][job.data["sent"]] = as_text.as_dict()
        return as_text

    def _count(self, *keys: str) -> None:
        """Statistics for /health, best-effort: a counter the store fails to write must not pass for a
        crash, which would send a message Twilio already took again, or drop one after three."""
        for key in keys:
            try:
                self.current.store.incr(key, COUNTER_TTL)
            except Exception as exc:
                log.warning("whatsapp.count_failed", counter=key, error=type(exc).__name__, detail=str(exc)[:200])

    def _notify(self, job: Job) -> str:
        """A message from the outbound API: sent once, its outcome kept for GET /api/outbound/messages/{id}."""
        store = self.current.store
        record = store.get(outbound_messages.record_key(job.data["outbound"]))
        if record is None or record["status"] != "queued":  # expired, or sent before a crash cost the lease
            self.queue.finish(job)
            return "already_done"
        callback = f"{self.status_callback}?outbound={record['id']}" if self.status_callback else None
        try:
            sid = self.sender.send(job.user, record["from"], outbound_messages.outgoing_of(record), callback)
        except SendError as exc:
            if exc.retryable and self._retry_later(job, "twilio", status=exc.status, code=exc.code):
                _counted(metrics.outbound_message_sent, "retried")
                return "send_retry"
            _counted(metrics.outbound_message_sent, "expired" if exc.retryable else "failed")
            log.error("outbound.send.failed", outbound_id=record["id"], status=exc.status, code=exc.code,
                      detail=exc.detail, retryable=exc.retryable)
            outbound_messages.mark_failed(store, record, exc.code, exc.detail)
            self.queue.finish(job)
            return "window_closed" if exc.code == WINDOW_CLOSED else "gave_up" if exc.retryable else "failed"
        outbound_messages.mark_sent(store, record, sid)
        _counted(metrics.outbound_message_sent, "sent")
        log.info("outbound.sent", outbound_id=record["id"], twilio_sid=sid)
        self.queue.finish(job)
        return "sent"

    def _retry_later(self, job: Job, reason: str, **context: object) -> bool:
        """Postpone the user's lane with exponential backoff; False once the retry window is spent.
        The first retry of a failing streak is a warning with the cause; the ones after it repeat it quietly."""
        data, now = job.data, time.time()
        data["attempts"] = data.get("attempts", 0) + 1
        first = "failing_since" not in data
        elapsed = now - data.setdefault("failing_since", now)
        window = self.current.settings.whatsapp_retry_window
        if elapsed >= window:
            return False
        delay = min(BACKOFF_FIRST * 2 ** (data["attempts"] - 1), BACKOFF_MAX, window - elapsed)
        (log.warning if first else log.info)("whatsapp.retry_later", reason=reason, delay=round(delay, 2), **context)
        self.queue.postpone(job, delay)
        return True

    def _crashed(self, job: Job) -> str:
        """A bug must not block the user's lane for ever: a few tries, then the job is dropped, loudly (and an
        outbound message reported failed)."""
        job.data["crashes"] = job.data.get("crashes", 0) + 1
        if job.data["crashes"] >= MAX_CRASHES:
            log.error("whatsapp.delivery.dropped", crashes=job.data["crashes"])
            if "outbound" in job.data:
                self._notification_dropped(job.data["outbound"])
            elif not job.data.get("sent"):
                self._apologise(job)
            self.queue.finish(job)
            return "dropped"
        self.queue.postpone(job, BACKOFF_MAX)
        return "crashed"

    def _apologise(self, job: Job) -> None:
        """A user's message dropped with nothing sent back: the apology instead of silence. Best-effort: what
        crashed may be the sending itself."""
        try:
            inbound = Inbound.from_dict(job.data["inbound"])
            for message in Conversation(self.current, job.user, self.native).apology():
                self.sender.send(job.user, self._from(inbound), message, self.status_callback)
        except Exception as exc:
            log.warning("whatsapp.delivery.apology_failed", error=type(exc).__name__, detail=str(exc)[:200])

    def _notification_dropped(self, message_id: str) -> None:
        """GET /api/outbound/messages/{id} says failed, not queued for ever. Best-effort, as counters are: what
        crashed may be the store itself, and the job must be dropped all the same."""
        store = self.current.store
        try:
            record = store.get(outbound_messages.record_key(message_id))
            if record is None or record["status"] != "queued":  # expired, or sent before a crash
                return
            outbound_messages.mark_failed(store, record, None, "the bridge failed to send it (see its log)")
        except Exception as exc:
            log.warning("outbound.dropped.unrecorded", outbound_id=message_id, error=type(exc).__name__,
                        detail=str(exc)[:200])
            return
        _counted(metrics.outbound_message_sent, "failed")


def _streak_over(data: dict[str, Any]) -> None:
    """A step succeeded: the next failure starts a streak of its own, its backoff at the first step again."""
    data.pop("failing_since", None)
    data.pop("attempts", None)


def _counted(metric: Callable[[str], None], result: str) -> None:
    """A Prometheus count, best-effort as _count's: a metric that cannot be written must not fail the step."""
    try:
        metric(result)
    except Exception as exc:
        log.warning("metrics.count_failed", metric=metric.__name__, error=type(exc).__name__, detail=str(exc)[:200])


def start_delivery(current: Bridge, queue: JobQueue) -> LaneWorkers:
    settings = current.settings
    assert settings.twilio_account_sid and settings.twilio_auth_token
    sender = MessageSender(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url)
    webhooks = WebhooksFirst()
    courier = Courier(current, queue, sender, native_features(settings, current.store, webhooks.wait))
    return LaneWorkers(queue, courier.deliver, settings.whatsapp_workers, webhooks=webhooks).start()
