"""The request hooks of every Twilio-facing blueprint: refuse what Twilio did not sign, and give a
webhook Twilio retries the answer it already got, so the caller's words reach Rasa once."""
from __future__ import annotations

import time
from typing import Any

import structlog
from flask import Response, g, request

from .. import metrics
from ..bridge import bridge
from ..limits import WEBHOOK_TIMEOUT
from ..logs import log
from ..state import StateStore, Value

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
REPLAY_TTL = 120  # Twilio's retries of one webhook all fall within its 15 s; a margin beyond
FIRST_ANSWER_WAIT = WEBHOOK_TIMEOUT - 1  # a retry waits for the first request's answer at most this long after it began
REPLAY_POLL = 0.05


def require_twilio_signature() -> Response | None:
    """before_request hook of every Twilio-facing blueprint: 403 unless Twilio signed it.

    The check refuses whatever goes wrong inside it (a body it cannot read, a validator that raises):
    only a signature that verified lets a request through, and `twilio_signed` records that it did,
    so an error answer can never stand in for this decision (web.errors).
    """
    current = bridge()
    if not current.settings.validate_signature:
        log.warning("signature.unchecked", reason="TWILIO_VALIDATE_SIGNATURE=false", path=request.path)
        g.twilio_signed = True
        return None
    try:
        valid = current.signatures.is_valid(request)
    except Exception as exc:
        log.warning("signature.check_failed", error=type(exc).__name__, detail=str(exc)[:200])
        valid = False
    if valid:
        g.twilio_signed = True
        return None
    return refuse_unsigned()


def twilio_signed() -> bool:
    """Did this request pass the signature check (or is checking switched off)?"""
    return bool(g.get("twilio_signed"))


def refuse_unsigned() -> Response:
    structlog.contextvars.bind_contextvars(outcome="forbidden")
    metrics.signature_rejected(request.url_rule.rule if request.url_rule else "unmatched")
    log.warning("signature.rejected", path=request.path, url=bridge().signatures.public_url(request),
                signed=bool(request.headers.get("X-Twilio-Signature")), content_type=request.mimetype)
    return Response("Forbidden: invalid Twilio signature\n", status=403, mimetype="text/plain")


def replay_retried_webhook() -> Response | None:
    """before_request, after the signature check: a webhook Twilio retries gets the answer it already got.

    Twilio marks every webhook with I-Twilio-Idempotency-Token, the same on its retries; answering a
    retry again would send the caller's words to Rasa twice and run that step of the dialogue twice.
    The first request to claim the token answers; a retry arriving while it is still working waits
    for that answer (within Twilio's 15 s) and replays it. A retry whose first request never answered
    gets the route's error answer rather than a second turn of the dialogue (FirstAnswerMissing).
    """
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if not token:
        return None
    key = f"replay:{request.path}:{token}"
    try:
        answered = first_answer(bridge().store, key)
    except FirstAnswerMissing:
        raise
    except Exception as exc:  # the store is down: answer this request rather than none at all
        log.warning("replay.unavailable", error=type(exc).__name__, detail=str(exc)[:200])
        return None
    if answered is None:
        g.replay_key = key  # this request answers; remember_answer keeps what it said
        return None
    structlog.contextvars.bind_contextvars(outcome="replayed")
    return Response(answered["body"], status=answered["status"], mimetype=answered["mimetype"])


def first_answer(store: StateStore, key: str, kept_for: float = REPLAY_TTL, take_over: bool = False) -> Any:
    """One answer for a message Twilio may send more than once: None when this request claims `key` (it
    answers, then keep_answer, or deletes `key` when it failed so that a retry answers); else the answer
    the first request kept.

    A retry that comes while the first request still works waits for its answer: the first one's
    connection may be the reason for the retry, and its answer would then reach nobody. A first request
    that has not answered FIRST_ANSWER_WAIT after it began never will (its worker died): with
    `take_over` this request claims `key` in its place (one retry only, when several find that claim:
    the others wait for its answer); without, FirstAnswerMissing.
    """
    until = time.time() + FIRST_ANSWER_WAIT
    while True:
        if store.add(key, {"claimed_at": time.time()}, kept_for):
            return None
        record = store.get(key)
        if record is None:
            continue  # the claim expired in between: claim it again
        if "answer" in record:
            return record["answer"]
        claimed_at = float(record.get("claimed_at", 0))
        if time.time() < min(until, claimed_at + FIRST_ANSWER_WAIT):
            time.sleep(REPLAY_POLL)
            continue
        if not take_over:
            raise FirstAnswerMissing(f"no answer for {key} within {FIRST_ANSWER_WAIT:g} s of the first request")
        until = time.time() + FIRST_ANSWER_WAIT
        if store.add(f"{key}:taken_over:{claimed_at!r}", {"at": time.time()}, kept_for):  # this claim, once
            log.warning("replay.first_answer_missing", key=key,
                        detail="the first request never answered; answering again")
            store.put(key, {"claimed_at": time.time()}, kept_for)
            return None
        time.sleep(REPLAY_POLL)  # another retry took over: wait for its answer


def keep_answer(store: StateStore, key: str, answer: Any, kept_for: float = REPLAY_TTL) -> None:
    """The first request's answer under its claimed `key`, for first_answer to give its retries."""
    store.put(*kept_answer(key, answer, kept_for))


def kept_answer(key: str, answer: Any, kept_for: float = REPLAY_TTL) -> tuple[str, Value, float]:
    """What keep_answer stores, for a write that stores other things with it (answer_storing)."""
    return key, {"answer": answer}, kept_for


class FirstAnswerMissing(Exception):
    """A retry waited for the first request's answer, and none came in time: the route's error answer."""


def remember_answer(response: Response) -> Response:
    """after_request: keep what a webhook answered, for a retry of it. Never changes the answer: a store
    that cannot keep it costs a retry its replay, not this request its TwiML."""
    key = g.get("replay_key")
    if key is None or response.direct_passthrough:
        return response
    try:
        if response.status_code >= 500:  # not an answer Twilio takes: a retry should try again
            bridge().store.delete(key)
            return response
        keep_answer(bridge().store, key, _answer_record(response))
    except Exception as exc:
        _not_kept(exc)
    return response


def answer_storing(response: Response, key: str, value: Value, ttl: float) -> Response:
    """`response`, once `value` is stored at `key`: state the next webhook reads, such as a call's. With an
    answer to keep for a retry of this webhook, both go to the store in one write, and remember_answer has
    nothing left to do. When that write fails, `value` alone, and remember_answer tries the answer once more:
    an answer the store cannot keep costs a retry its replay; a value it cannot store fails this webhook
    (the route's error answer)."""
    store, replay_key = bridge().store, g.get("replay_key")
    if replay_key is not None and response.status_code < 500:
        try:
            store.put_many([(key, value, ttl), kept_answer(replay_key, _answer_record(response))])
            g.pop("replay_key")
            return response
        except Exception as exc:
            _not_kept(exc)
    store.put(key, value, ttl)
    return response


def _answer_record(response: Response) -> dict[str, Any]:
    return {"body": response.get_data(as_text=True), "status": response.status_code, "mimetype": response.mimetype}


def _not_kept(exc: Exception) -> None:
    log.warning("replay.not_kept", error=type(exc).__name__, detail=str(exc)[:200])
