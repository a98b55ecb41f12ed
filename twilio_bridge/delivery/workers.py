"""Background threads inside each server process that take jobs from the durable queue.

`gunicorn twilio_voice_server:app` alone is a complete deployment: every worker process runs
WHATSAPP_WORKERS of these threads, and processes (and hosts) share the queue. A heartbeat keeps the
leases of the jobs in hand alive; when a process dies its leases run out and another process takes
the jobs over. Threads are many so that many users' messages can wait for a slow Rasa at once; only
WORKING_AT_ONCE of them do the rest of a job at a time (`waiting_for_rasa`), so that however many
there are, few compete with the webhooks of their process for its CPU.

Idle threads do not each poll the queue: one of them, the looker, looks every POLL_SECONDS (for jobs
other processes enqueued and postponed ones come due), and the others sleep until woken. A job
enqueued in this process wakes one; a thread that finds a job wakes one more before it starts on it,
which looks next, so a batch found at once is spread over threads as fast as they take it. Sixteen
threads each polling had cost two idle workers 19-22 ms of CPU a second, against 13-14 with one looker.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator

from ..logs import log
from .queue import Job, JobQueue

LEASE_SECONDS = 10.0  # how long a dead process's jobs wait before another takes them over
HEARTBEAT_SECONDS = 2.0
POLL_SECONDS = 0.5  # jobs enqueued by other processes, and postponed ones, are found this often
WEBHOOKS_FIRST = 0.05  # at most this long background work waits, before it starts, for the webhooks in hand to answer
# Delivery threads of a process that work at once (everything a delivery does but wait for Rasa's answer).
# More working at once take the process's CPU from a burst of webhooks: with Rasa answering at once, sixteen
# raised the webhook's p99 1.4 to 2.4 times, for no more replies a second (bench/README.md, "WhatsApp delivery
# threads").
WORKING_AT_ONCE = 4
# The niceness a delivery thread adds to its own (Linux schedules threads, not processes): `WebhooksFirst` holds a
# process's deliveries back for its own webhooks only, and the other workers' webhooks then shared the cores
# with them. With Rasa answering at once, 16 webhooks at a time, six pairs of runs: the webhook's median
# 20.4-22.4 ms -> 19.1-20.3, its p99 41.0-49.8 -> 40.8-49.1 (median of runs 45.5 -> 42.5); replies as fast.
DELIVERY_NICENESS = 10

_thread = threading.local()  # in a delivery thread, `working`: the slots of its LaneWorkers


@contextmanager
def waiting_for_rasa() -> Iterator[None]:
    """Around a delivery's wait for Rasa's answer (`Bridge.ask_rasa`: the message sent, the answer not yet
    come): the thread's working slot goes to another delivery meanwhile, and everything else a delivery does
    (a voice note transcribed, the state read and written, the reply sent) is done in a slot. Outside a
    delivery thread it changes nothing."""
    working: threading.BoundedSemaphore | None = getattr(_thread, "working", None)
    if working is None:
        yield
        return
    working.release()
    try:
        yield
    finally:
        working.acquire()


def defer_to_webhooks() -> None:
    """The calling thread yields the host's cores to webhook threads, every worker's: niceness DELIVERY_NICENESS
    more than the process's (on Linux, where a thread has a niceness of its own; elsewhere nothing changes)."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + DELIVERY_NICENESS)
    except OSError as exc:  # a container may forbid it: deliveries then merely compete as before
        log.warning("delivery.nice_failed", error=type(exc).__name__, detail=str(exc)[:200])


class WebhooksFirst:
    """A process's webhooks go before its background work (a delivery thread taking a job, a "typing…"
    post): while a webhook stores a message, work about to start waits for it (WEBHOOKS_FIRST at most),
    so that a burst of webhooks has the process's CPU first and the rest catches up after."""

    def __init__(self) -> None:
        self._answering = 0  # webhooks of this process storing a message now
        self._answered = threading.Condition()

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around a webhook's work."""
        with self._answered:
            self._answering += 1
        try:
            yield
        finally:
            with self._answered:
                self._answering -= 1
                if not self._answering:
                    self._answered.notify_all()

    def wait(self) -> None:
        """Until no webhook of this process is in hand, WEBHOOKS_FIRST at most."""
        with self._answered:
            self._answered.wait_for(lambda: not self._answering, WEBHOOKS_FIRST)


class LaneWorkers:
    def __init__(self, queue: JobQueue, handle: Callable[[Job], None], threads: int,
                 lease: float = LEASE_SECONDS, poll: float = POLL_SECONDS, webhooks: WebhooksFirst | None = None):
        self.queue = queue
        self.handle = handle
        self.lease = lease
        self.poll = poll
        self.webhooks = webhooks or WebhooksFirst()
        self.threads = [threading.Thread(target=self._work, name=f"lane-worker-{n}", daemon=True)
                        for n in range(threads)]
        self.heart = threading.Thread(target=self._heartbeat, name="lane-heartbeat", daemon=True)
        self._active: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._looking = False  # an idle thread looks for jobs every `poll` seconds; the other idle ones sleep
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._working = threading.BoundedSemaphore(min(threads, WORKING_AT_ONCE))

    def start(self) -> LaneWorkers:
        for thread in [*self.threads, self.heart]:
            thread.start()
        return self

    def wake(self) -> None:
        """A job was just enqueued in this process (or one was just taken, and more may be due): one idle thread
        looks now instead of at the looker's next poll."""
        with self._wake:
            self._wake.notify()

    def answering(self) -> AbstractContextManager[None]:
        """Around a webhook's work: a thread about to take a job waits for it (`WebhooksFirst`)."""
        return self.webhooks.answering()

    def begin_stop(self) -> None:
        """Take no new job, without waiting: the jobs in hand wind down while the caller stops other things."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float = 15.0) -> None:
        """Take no new job; let the jobs in hand finish within `timeout` seconds in all, for every thread
        together (their leases lapse if they cannot, and another process takes the jobs over)."""
        deadline = time.monotonic() + timeout
        self.begin_stop()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stopped.set()  # the heartbeat stops now, whether or not every job is done
        self.heart.join(max(0.0, deadline - time.monotonic()))
        unfinished = sum(thread.is_alive() for thread in self.threads)
        log.info("delivery.stopped", unfinished=unfinished, detail="jobs left in hand go to another process when"
                 " their leases lapse" if unfinished else "every job in hand finished")

    def _work(self) -> None:
        _thread.working = self._working
        defer_to_webhooks()
        while not self._stopping.is_set():
            self.webhooks.wait()
            with self._working:
                handled = self._take_one()
            if not handled:
                self._idle()

    def _idle(self) -> None:
        """Until there may be a job: `poll` seconds for the looker, and until woken for the other idle threads."""
        with self._wake:
            if self._stopping.is_set():
                return
            if self._looking:
                self._wake.wait()
                return
            self._looking = True
            try:
                self._wake.wait(self.poll)
            finally:
                self._looking = False

    def _take_one(self) -> bool:
        """Claim a job and handle it; False when there was none to take."""
        try:
            job = self.queue.claim(self.lease)
        except Exception as exc:  # the store is down: wait and try again, never die
            log.error("queue.claim_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return False
        if job is None:
            return False
        self.wake()  # this thread no longer looks, and the job may have come with others
        with self._lock:
            self._active[job.token] = job
        try:
            self.handle(job)
        except Exception:
            log.exception("queue.job_crashed", job_id=job.id)
        finally:
            with self._lock:
                self._active.pop(job.token, None)
        return True

    def _heartbeat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            with self._lock:
                jobs = list(self._active.values())
            for job in jobs:
                try:
                    self.queue.renew(job, self.lease)
                except Exception as exc:
                    log.warning("queue.renew_failed", job_id=job.id, error=type(exc).__name__)
