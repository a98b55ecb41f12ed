"""Slow assistants never cost a call: hold the caller while Rasa thinks, poll for the answer.

A voice webhook sends the caller's words to Rasa and waits for the answer at most
`Settings.hold_after` seconds, reading it itself when it comes in time (most turns: no other thread
is involved). Past that it answers with a holding phrase and a <Redirect> to the poll route, and
hands the answer still to come to a bounded pool in this worker, which keeps waiting for it, up to
RASA_MAX_WAIT_SECONDS in all. The outcome goes to the shared state store under the turn's key, so
the poll may land on any worker or host.

Whether a held turn's deadline has passed is the store's to say, not a host's clock: with the turn's record
goes a key that expires RASA_MAX_WAIT_SECONDS (and a grace) after the hold, measured by the store (Redis's
own clock; SQLite's host), so a poll on a host whose clock runs ahead or behind gives up neither early nor late.

The pool never queues: with RASA_MAX_IN_FLIGHT requests already open, a new turn is refused at once
("overloaded", so the caller is handed off now rather than after a wait in a queue), and each request
to Rasa is bounded by the time its caller has left, so none outlives the turn it answers.
"""
from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ..logs import log
from ..rasa.client import Metadata, RasaError, Reply
from ..state import StateStore

Post = Callable[[str, str, Metadata, float], Reply]  # sends a message to Rasa (Bridge.post_to_rasa)
Read = Callable[..., list[dict[str, Any]]]  # reads its answer: (reply, within=seconds) (Bridge.read_reply)

POLL_STEP = 0.2  # how often a poll looks for the outcome in the store
READ_AT_LEAST = 0.5  # seconds to read an answer that began to come within the turn's wait, however late it began
DEADLINE_GRACE = 2.0  # past the deadline, a turn with no outcome has lost its worker
KEPT_AFTER_DEADLINE = 120.0  # a retried poll still finds the outcome


@dataclass(frozen=True)
class Outcome:
    """What Rasa did with one message: reply items, or the kind of failure."""

    items: list[dict[str, Any]] | None
    error: str | None
    seconds: float
    detail: str | None = None

    def record(self) -> dict[str, Any]:
        return {"status": "failed" if self.error else "done", "items": self.items, "error": self.error,
                "detail": self.detail, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Outcome:
        return cls(record.get("items"), record.get("error"), float(record.get("seconds", 0.0)), record.get("detail"))


class RasaWaiter:
    """One per worker process: at most `max_in_flight` Rasa requests open at once, held turns included."""

    def __init__(self, post: Post, read: Read, store: StateStore, max_in_flight: int):
        self._post = post
        self._read = read
        self.store = store
        self.pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="rasa-wait")
        self.free = threading.BoundedSemaphore(max_in_flight)  # a slot per pool thread: a task never queues

    def ask(self, key: str, sender: str, message: str, metadata: Metadata, *, wait: float, max_wait: float,
            extra: dict[str, Any]) -> Outcome | None:
        """Rasa's outcome if it comes within `wait` seconds; else None, and it will land in the store at `key`.
        With every slot taken, an "overloaded" outcome at once: nothing is sent to Rasa."""
        if not self.free.acquire(blocking=False):
            log.warning("rasa.overloaded", detail="every Rasa request slot of this worker is taken")
            return Outcome(None, "overloaded", 0.0, "RASA_MAX_IN_FLIGHT requests already open")
        started = time.monotonic()
        try:
            reply = self._post(sender, message, metadata, max_wait)
        except RasaError as exc:
            self.free.release()
            return Outcome(None, exc.kind, time.monotonic() - started, exc.detail)
        except BaseException:
            self.free.release()
            raise
        if max_wait <= wait:  # nothing to hold: the request's own timeout ends the wait
            return self._outcome(reply, started)
        if reply.arrives(wait - (time.monotonic() - started)):
            # Read here, within what is left of `wait` and at least a moment: an answer begun is all but read.
            return self._outcome(reply, started, within=max(READ_AT_LEAST, wait - (time.monotonic() - started)))
        context = contextvars.copy_context()  # the wait logs with the call's context, and cannot leak into the pool
        try:
            in_time = max_wait + DEADLINE_GRACE - (time.monotonic() - started)  # from the message sent, not from now
            self.store.put_many([(key, {"status": "waiting", **extra}, self._ttl(max_wait)),
                                 (_in_time_key(key), {}, in_time)])
            self.pool.submit(context.run, self._hold, key, reply, started, extra, max_wait)
        except BaseException:  # the store failed, or the worker is stopping: nobody will read the answer
            reply.abandon()
            self.free.release()
            raise
        return None

    def _outcome(self, reply: Reply, started: float, within: float | None = None) -> Outcome:
        """The answer read, and the request's slot free again."""
        try:
            return Outcome(self._read(reply, within=within), None, time.monotonic() - started)
        except RasaError as exc:
            return Outcome(None, exc.kind, time.monotonic() - started, exc.detail)
        except Exception:
            log.exception("rasa.wait_failed")
            return Outcome(None, "error", time.monotonic() - started, "see rasa.wait_failed")
        finally:
            self.free.release()

    def _hold(self, key: str, reply: Reply, started: float, extra: dict[str, Any], max_wait: float) -> None:
        """In the pool: the held turn's answer, read by its deadline and stored for the poll."""
        outcome = self._outcome(reply, started)
        try:
            self.store.put(key, {**outcome.record(), **extra}, self._ttl(max_wait))
            log.info("hold.outcome_stored", rasa_ms=round(outcome.seconds * 1000), error=outcome.error)
        except Exception:  # the poll gives up at the deadline and apologises
            log.exception("hold.store_failed")

    def collect(self, key: str, longest: float) -> dict[str, Any] | None:
        """The turn's record once it has an outcome, or still waiting after `longest` seconds (or its deadline)."""
        record = self.store.get(key)
        until = time.monotonic() + longest
        while record is not None and record["status"] == "waiting" and time.monotonic() < until:
            if self.past_deadline(key):
                break
            time.sleep(min(POLL_STEP, max(0.0, until - time.monotonic())))
            record = self.store.get(key)
        return record

    def past_deadline(self, key: str) -> bool:
        """No outcome is coming for the turn at `key`: its deadline and the grace have passed, as the store's
        clock tells (the key that stands for them has expired), and the worker that asked is gone, or the store
        lost its write."""
        return self.store.get(_in_time_key(key)) is None

    @staticmethod
    def _ttl(max_wait: float) -> float:
        return max_wait + KEPT_AFTER_DEADLINE


def _in_time_key(key: str) -> str:
    """The key that stands for a held turn's time to answer: it expires at the deadline and its grace."""
    return f"{key}:in_time"
