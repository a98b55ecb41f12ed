"""WhatsApp (and SMS) webhooks: a chat with Rasa whose sender is the user's `From` address.

REST mode (account SID, auth token and TWILIO_WHATSAPP_FROM set): the message is stored in the
durable queue, the answer is an empty <Response/> at once, and background workers send Rasa's
replies through the Messages API. TwiML mode (otherwise): the replies are <Message>s in the answer.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import structlog
from flask import Blueprint, Response, g, request
from twilio.twiml.messaging_response import MessagingResponse

from .. import metrics, routes
from ..bridge import Bridge, bridge
from ..logs import log
from ..outbound import messages as outbound_messages
from ..phrases import phrases_for
from ..rasa.client import RasaError
from ..state import COUNTER_TTL
from ..web.errors import answer_every_error
from ..web.hooks import first_answer, keep_answer, require_twilio_signature
from ..web.responses import render, twiml
from .conversation import Conversation, Inbound
from .replies import Outgoing, messaging_twiml

bp = Blueprint("whatsapp", __name__)
bp.before_request(require_twilio_signature)

RATE_WINDOW = 60
ANSWER_KEPT = 600  # seconds a TwiML-mode answer waits for Twilio's retries (they come within 15 s)
DELIVERY_STATUSES = ("queued", "sending", "sent", "delivered", "read", "undelivered", "failed", "canceled")


@bp.post(routes.WHATSAPP)
def incoming_message() -> Response:
    current = bridge()
    inbound = Inbound.from_form(request.form)
    structlog.contextvars.bind_contextvars(message_sid=inbound.sid, user=inbound.user, channel=inbound.channel,
                                           retry=bool(request.headers.get("I-Twilio-Idempotency-Token")))
    if current.queue is not None and current.settings.whatsapp_rest_mode:
        try:
            with current.workers.answering() if current.workers else nullcontext():
                return store_for_delivery(current, inbound)
        except Exception as exc:  # the queue is unreachable: answer now rather than lose the message
            log.error("whatsapp.queue_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
    return answer_now(current, inbound)


def store_for_delivery(current: Bridge, inbound: Inbound) -> Response:
    """Durable before the answer: once Twilio has its 200, the message is in the queue. A message seen before
    is not counted towards the rate limit; on SQLite the count and the message are one write."""
    assert current.queue is not None
    counted: list[int] = []

    def admit() -> dict[str, Any] | None:  # inside the queue's write, perhaps in another request's thread
        counted.append(current.store.incr(_rate_key(inbound), RATE_WINDOW))
        notice = _notice_for(current, counted[0])
        if notice == []:
            return None
        job: dict[str, Any] = {"inbound": inbound.as_dict()}
        if notice:
            job.update(outgoing=[message.as_dict() for message in notice], sent=0)
        return job

    try:
        stored = current.queue.offer(inbound.sid, inbound.user, admit)
    finally:
        if counted:  # also when the queue failed after counting, so that the TwiML answer does not count again
            g.rate_decision = _rate_decision(current, counted[0])  # (on SQLite the count went with the failed write)
    if stored is None:
        return _empty("rate_limited")
    if not stored:
        return _empty("duplicate")
    if current.workers is not None:
        current.workers.wake()
    return _empty("rate_notice" if g.rate_decision else "queued")


def answer_now(current: Bridge, inbound: Inbound) -> Response:
    """TwiML mode: Rasa's replies in the answer, within RASA_TIMEOUT; Twilio's retry gets the same answer."""
    seen_key = f"whatsapp:seen:{inbound.sid}"
    earlier = first_answer(current.store, seen_key, ANSWER_KEPT, take_over=True)
    if earlier is not None:
        structlog.contextvars.bind_contextvars(outcome="duplicate")
        return twiml(earlier)
    try:
        answer = reply_twiml(current, inbound)
    except Exception:
        current.store.delete(seen_key)  # nothing was answered: a retry answers instead of waiting for this one
        raise
    keep_answer(current.store, seen_key, answer, ANSWER_KEPT)
    return twiml(answer)


def reply_twiml(current: Bridge, inbound: Inbound) -> str:
    conversation = Conversation(current, inbound.user)
    messages = rate_limited(current, inbound)
    if messages is None:
        try:
            messages = conversation.reply(inbound)
            structlog.contextvars.bind_contextvars(outcome="replied")
        except RasaError as exc:
            log.warning("rasa.failed", kind=exc.kind, detail=exc.detail)
            structlog.contextvars.bind_contextvars(outcome="apology", rasa_error=exc.kind)
            messages = conversation.apology()
    return render(messaging_twiml(messages))


def rate_limited(current: Bridge, inbound: Inbound) -> list[Outgoing] | None:
    """None while the user is within WHATSAPP_RATE_LIMIT a minute; past it, one notice, then nothing.
    Counted once per request, also when the queue fails and the message is answered in TwiML instead."""
    if "rate_decision" not in g:
        g.rate_decision = _rate_decision(current, current.store.incr(_rate_key(inbound), RATE_WINDOW))
    return g.rate_decision


def _rate_key(inbound: Inbound) -> str:
    return f"whatsapp:rate:{inbound.user}"


def _notice_for(current: Bridge, count: int) -> list[Outgoing] | None:
    """The rate limit's decision for a user's `count`-th message of the minute (see rate_limited)."""
    limit = current.settings.whatsapp_rate_limit
    if count <= limit:
        return None
    if count > limit + 1:
        return []
    return [Outgoing(phrases_for(current.settings.voice_language).chat_slow_down)]


def _rate_decision(current: Bridge, count: int) -> list[Outgoing] | None:
    """_notice_for, in the request's log."""
    notice = _notice_for(current, count)
    if notice is not None:
        structlog.contextvars.bind_contextvars(outcome="rate_limited", rate=count)
    if notice:
        log.warning("whatsapp.rate_limited", limit=current.settings.whatsapp_rate_limit)
    return notice


@bp.post(routes.WHATSAPP_STATUS)
def delivery_status() -> Response:
    """Status callback of a message the bridge sent: logged, and counted for /health."""
    store = bridge().store
    status = request.form.get("MessageStatus") or request.form.get("SmsStatus") or "unknown"
    code = request.form.get("ErrorCode")
    structlog.contextvars.bind_contextvars(twilio_sid=request.form.get("MessageSid"), message_status=status,
                                           user=request.form.get("To"), outcome="counted")
    outbound_messages.record_status(store, request.args.get("outbound"), request.form)
    counted = status if status in DELIVERY_STATUSES else "other"
    store.incr(f"whatsapp:status:{counted}", COUNTER_TTL)
    metrics.whatsapp_status_reported(counted)
    if status in ("failed", "undelivered"):
        store.incr(f"whatsapp:status_error:{code or 'none'}", COUNTER_TTL)
        log.warning("whatsapp.delivery_failed", error_code=code, error_message=request.form.get("ErrorMessage"))
    return Response(status=204)


def delivery_counts(current: Bridge) -> dict[str, object]:
    """Counters for /health: the statuses Twilio reported, and the bridge's own sends and failed sends."""
    statuses = {status: current.store.count(f"whatsapp:status:{status}") for status in (*DELIVERY_STATUSES, "other")}
    return {"statuses": {status: n for status, n in statuses.items() if n},
            "sent": current.store.count("whatsapp:sent"), "send_errors": current.store.count("whatsapp:send_errors")}


def _error_answer() -> Response:
    structlog.contextvars.bind_contextvars(outcome="error")
    return twiml(messaging_twiml(Conversation(bridge(), "").apology()))


answer_every_error(bp, "whatsapp.unexpected_error", _error_answer)


EMPTY = str(MessagingResponse())  # REST mode's answer to every message, rendered once


def _empty(outcome: str) -> Response:
    structlog.contextvars.bind_contextvars(outcome=outcome)
    return twiml(EMPTY)
