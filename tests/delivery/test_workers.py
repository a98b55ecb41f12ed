"""The delivery threads let the webhooks of their process answer first, for a bounded time, and only a few
of them work at once while the others wait for Rasa. Idle, one of them looks for jobs and the others sleep."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import wait_for
from twilio_bridge.app import create_app
from twilio_bridge.bridge import EXTENSION
from twilio_bridge.config import Settings
from twilio_bridge.delivery import workers as workers_module
from twilio_bridge.delivery.queue import Job, SqliteJobQueue
from twilio_bridge.delivery.workers import WORKING_AT_ONCE, LaneWorkers, waiting_for_rasa
from twilio_bridge.testing.standin import RasaStandIn


@contextmanager
def one_thread(queue: SqliteJobQueue, handle: Callable[[Job], Any]) -> Iterator[LaneWorkers]:
    """One delivery thread running `handle` on the jobs it takes, stopped on the way out."""
    workers = LaneWorkers(queue, handle, threads=1, poll=0.05).start()
    try:
        yield workers
    finally:
        workers.stop(5)


def deliver_one(queue: SqliteJobQueue, workers: LaneWorkers) -> None:
    """Ana's message SM1 queued, and the delivery thread told."""
    queue.enqueue("SM1", "ana", {})
    workers.wake()


def test_a_job_is_taken_once_the_webhooks_in_hand_have_answered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "WEBHOOKS_FIRST", 30.0)  # long enough that only the webhooks' end can decide
    queue = SqliteJobQueue(tmp_path / "state.db")
    answered, handled = threading.Event(), threading.Event()
    taken_after_answer: list[bool] = []

    def handle(job: Job) -> None:
        taken_after_answer.append(answered.is_set())
        queue.finish(job)
        handled.set()

    with one_thread(queue, handle) as workers:
        with workers.answering():
            deliver_one(queue, workers)
            wait_for(lambda: len(workers.webhooks._answered._waiters) == 1, seconds=5)  # the thread waits for this webhook
            answered.set()
        assert handled.wait(5)
        assert taken_after_answer == [True]


def test_a_delivery_runs_nicer_than_the_threads_that_answer_webhooks(tmp_path: Path) -> None:
    """Linux schedules threads: a delivery thread's niceness is its own, above its process's, so every worker's
    webhooks have the cores before any worker's deliveries."""
    queue = SqliteJobQueue(tmp_path / "state.db")
    seen: list[int] = []
    handled = threading.Event()

    def handle(job: Job) -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        queue.finish(job)
        handled.set()

    with one_thread(queue, handle) as workers:
        deliver_one(queue, workers)
        assert handled.wait(5)
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0) + workers_module.DELIVERY_NICENESS]


def test_webhooks_without_end_do_not_hold_deliveries_back_for_long(tmp_path: Path) -> None:
    queue = SqliteJobQueue(tmp_path / "state.db")
    handled = threading.Event()
    with one_thread(queue, lambda job: (queue.finish(job), handled.set())) as workers:
        with workers.answering():  # one webhook after another, never none in hand
            deliver_one(queue, workers)
            assert handled.wait(5)  # after WEBHOOKS_FIRST, not when the webhooks stop


def test_every_thread_can_wait_for_rasa_at_once_but_only_a_few_work_at_once(tmp_path: Path) -> None:
    queue = SqliteJobQueue(tmp_path / "state.db")
    threads = 2 * WORKING_AT_ONCE
    all_waiting, go_on = threading.Barrier(threads), threading.Event()
    lock = threading.Lock()
    working, most_working, finished = 0, 0, []

    def handle(job: Job) -> None:
        nonlocal working, most_working
        with waiting_for_rasa():
            all_waiting.wait(5)  # broken, and the job never finished, unless every thread waits at once
        with lock:
            working += 1
            most_working = max(most_working, working)
        go_on.wait(10)
        with lock:
            working -= 1
        queue.finish(job)
        finished.append(job.id)

    workers = LaneWorkers(queue, handle, threads=threads, poll=0.05).start()
    try:
        for n in range(threads):
            queue.enqueue(f"SM{n}", f"user{n}", {})
            workers.wake()
        # the rest, back from Rasa, wait for a working slot while the first few hold theirs
        wait_for(lambda: working == WORKING_AT_ONCE
                 and len(workers._working._cond._waiters) == threads - WORKING_AT_ONCE)  # type: ignore[attr-defined]
        go_on.set()
        wait_for(lambda: len(finished) == threads)
        assert most_working == WORKING_AT_ONCE
    finally:
        go_on.set()
        workers.stop(5)


class CountedQueue(SqliteJobQueue):
    """A queue that notes when each claim was tried, and by which thread."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.claims: list[tuple[float, str]] = []

    def claim(self, lease: float) -> Job | None:
        self.claims.append((time.monotonic(), threading.current_thread().name))
        return super().claim(lease)


def test_idle_threads_look_for_jobs_one_at_a_time(tmp_path: Path) -> None:
    queue, threads, poll = CountedQueue(tmp_path / "state.db"), 8, 0.05

    def looks_after_the_first() -> list[float]:
        """Each thread looks once as it starts (late, perhaps, on a busy machine); these are the looks after."""
        started: set[str] = set()
        later = []
        for when, thread in list(queue.claims):
            if thread in started:
                later.append(when)
            started.add(thread)
        return later

    workers = LaneWorkers(queue, queue.finish, threads=threads, poll=poll).start()
    try:
        wait_for(lambda: len(looks_after_the_first()) >= 6)
        looks = looks_after_the_first()[:6]
    finally:
        workers.stop(5)
    # Eight threads each polling would look eight times a poll; one looker looks once a poll.
    assert min(later - earlier for earlier, later in zip(looks, looks[1:])) >= 0.8 * poll, looks


def test_jobs_found_at_once_are_taken_by_as_many_threads_at_once(tmp_path: Path) -> None:
    queue, together = SqliteJobQueue(tmp_path / "state.db"), 4
    all_in_hand = threading.Barrier(together)
    handled: list[str] = []

    def handle(job: Job) -> Any:
        all_in_hand.wait(5)  # broken, and the job not finished, unless the jobs are in hand together
        handled.append(job.id)
        return queue.finish(job)

    workers = LaneWorkers(queue, handle, threads=together, poll=0.05).start()
    try:
        for n in range(together):  # as another process enqueues: nothing wakes this one's threads
            queue.enqueue(f"SM{n}", f"user{n}", {})
        wait_for(lambda: len(handled) == together)
    finally:
        workers.stop(5)
    assert not all_in_hand.broken


def test_a_delivery_gives_its_working_slot_up_only_while_rasa_thinks(tmp_path: Path, settings: Settings,
                                                                     standin: RasaStandIn) -> None:
    current = create_app(settings).extensions[EXTENSION]
    queue = SqliteJobQueue(tmp_path / "queue.db")
    standin.delay = 1.0
    slots_free: list[int] = []
    handled = threading.Event()

    def handle(job: Job) -> None:
        slots_free.append(workers._working._value)  # type: ignore[attr-defined]
        current.ask_rasa(job.user, "hola", {})
        slots_free.append(workers._working._value)  # type: ignore[attr-defined]
        queue.finish(job)
        handled.set()

    with one_thread(queue, handle) as workers:
        deliver_one(queue, workers)
        wait_for(lambda: len(standin.received) == 1 and workers._working._value == 1)  # type: ignore[attr-defined]
        assert not handled.is_set()  # the slot was seen free while the delivery still waited for Rasa
        assert handled.wait(5)
    assert slots_free == [0, 0]  # held while it asked and after it read: free only while Rasa thought
