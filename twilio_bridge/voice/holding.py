"""Slow assistants never cost a call: ask Rasa in the background, hold the caller, poll for the answer.

A voice webhook waits for Rasa at most `Settings.hold_after` seconds. Past that it answers with a
holding phrase and a <Redirect> to the poll route, while a bounded pool in this worker keeps waiting
for Rasa, up to RASA_MAX_WAIT_SECONDS in all. The outcome goes to the shared state store under the
turn's key, so the poll may land on any worker or host.

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
from ..rasa.client import Metadata, RasaError
from ..state import StateStore

Ask = Callable[[str, str, Metadata, float], list[dict[str, Any]]]

POLL_STEP = 0.2  # how often a poll looks for the outcome in the store
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


class PendingAsk:
    """One question to Rasa in flight in this worker: the turn it answers and when its caller stops waiting."""

    def __init__(self, key: str, extra: dict[str, Any], deadline: float):
        self.key = key
        self.extra = extra
        self.deadline = deadline
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.held = False


class RasaWaiter:
    """One per worker process: at most `max_in_flight` Rasa requests open at once, held turns included."""

    def __init__(self, ask: Ask, store: StateStore, max_in_flight: int):
        self._ask = ask
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
        job = PendingAsk(key, extra, time.time() + max_wait)
        context = contextvars.copy_context()  # the job logs with the call's context, and cannot leak into the pool
        try:
            self.pool.submit(context.run, self._run, job, sender, message, metadata, max_wait)
        except BaseException:
            self.free.release()
            raise
        if job.done.wait(wait):
            return job.outcome
        with job.lock:
            if job.outcome is not None:
                return job.outcome
            self.store.put(key, {"status": "waiting", "deadline": job.deadline, **extra}, self._ttl(max_wait))
            job.held = True
        return None

    def _run(self, job: PendingAsk, sender: str, message: str, metadata: Metadata, max_wait: float) -> None:
        started = time.monotonic()
        try:
            left = job.deadline - time.time()  # the caller's time, not a fresh max_wait
            if left <= 0:
                outcome = Outcome(None, "expired", 0.0, "the caller stopped waiting before Rasa was asked")
            else:
                outcome = Outcome(self._ask(sender, message, metadata, left), None, time.monotonic() - started)
        except RasaError as exc:
            outcome = Outcome(None, exc.kind, time.monotonic() - started, exc.detail)
        except Exception:
            log.exception("rasa.wait_failed")
            outcome = Outcome(None, "error", time.monotonic() - started, "see rasa.wait_failed")
        finally:
            self.free.release()
        with job.lock:
            job.outcome = outcome
            if job.held:
                self._store_outcome(job, outcome, max_wait)
        job.done.set()

    def _store_outcome(self, job: PendingAsk, outcome: Outcome, max_wait: float) -> None:
        try:
            self.store.put(job.key, {**outcome.record(), "deadline": job.deadline, **job.extra}, self._ttl(max_wait))
            log.info("hold.outcome_stored", rasa_ms=round(outcome.seconds * 1000), error=outcome.error)
        except Exception:  # the poll gives up at the deadline and apologises
            log.exception("hold.store_failed")

    def collect(self, key: str, longest: float) -> dict[str, Any] | None:
        """The turn's record once it has an outcome, or still waiting after `longest` seconds (or its deadline)."""
        record = self.store.get(key)
        if record is None:
            return None
        until = time.monotonic() + min(longest, max(0.0, record["deadline"] + DEADLINE_GRACE - time.time()))
        while record is not None and record["status"] == "waiting" and time.monotonic() < until:
            time.sleep(min(POLL_STEP, max(0.0, until - time.monotonic())))
            record = self.store.get(key)
        return record

    @staticmethod
    def _ttl(max_wait: float) -> float:
        return max_wait + KEPT_AFTER_DEADLINE


def past_deadline(record: dict[str, Any]) -> bool:
    """No outcome and none coming: the worker that asked is gone, or the store lost its write."""
    return time.time() >= record["deadline"] + DEADLINE_GRACE
