"""The durable queue's contract, the same for SQLite and Redis (a real redis-server)."""
from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

import pytest

from tests.clocks import SkewedClock
from twilio_bridge import state
from twilio_bridge.delivery import queue as queue_module
from twilio_bridge.delivery.queue import JobQueue, RedisJobQueue, SqliteJobQueue


@pytest.fixture(params=["sqlite", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> JobQueue:
    if request.param == "sqlite":
        return SqliteJobQueue(tmp_path / "queue.db")
    url = request.getfixturevalue("redis_url")
    return RedisJobQueue(url, prefix=f"test-{secrets.token_hex(4)}:")


def test_one_lane_per_user_in_order_and_lanes_in_parallel(queue: JobQueue) -> None:
    for job_id, user in (("a1", "ana"), ("a2", "ana"), ("b1", "beto")):
        assert queue.enqueue(job_id, user, {"n": job_id})
    first, second = queue.claim(5), queue.claim(5)
    assert (first.id, second.id) == ("a1", "b1")  # ana's a2 waits behind a1; beto is not blocked
    assert queue.claim(5) is None
    assert queue.finish(first) and queue.claim(5).id == "a2"
    assert queue.pending() == 2


def test_a_job_id_is_taken_once(queue: JobQueue) -> None:
    assert queue.enqueue("SM1", "ana", {}) and queue.seen("SM1")
    assert not queue.enqueue("SM1", "ana", {"again": True})
    job = queue.claim(5)
    assert queue.finish(job) and not queue.enqueue("SM1", "ana", {})  # still remembered once done
    assert queue.pending() == 0 and not queue.seen("SM2")


def test_a_lapsed_lease_hands_the_job_over_and_locks_out_the_old_holder(queue: JobQueue) -> None:
    queue.enqueue("SM1", "ana", {"step": 0})
    lost = queue.claim(0.2)
    assert queue.claim(5) is None
    time.sleep(0.3)
    taken = queue.claim(5)
    assert taken.id == "SM1" and taken.token != lost.token
    lost.data["step"] = 99
    assert not queue.save(lost) and not queue.renew(lost, 5) and not queue.finish(lost)
    assert not queue.postpone(lost, 1)
    taken.data["step"] = 1
    assert queue.save(taken) and queue.renew(taken, 5) and queue.finish(taken)


def test_postponing_holds_the_whole_lane_and_keeps_progress(queue: JobQueue) -> None:
    queue.enqueue("a1", "ana", {"tries": 0})
    queue.enqueue("a2", "ana", {})
    job = queue.claim(5)
    job.data["tries"] = 1
    assert queue.postpone(job, 0.3)
    assert queue.claim(5) is None  # a2 must not overtake a1
    time.sleep(0.35)
    again = queue.claim(5)
    assert (again.id, again.data) == ("a1", {"tries": 1})


def test_a_renewed_lease_outlives_its_first_term(queue: JobQueue) -> None:
    queue.enqueue("a1", "ana", {})
    job = queue.claim(0.3)
    time.sleep(0.2)
    assert queue.renew(job, 0.5)
    time.sleep(0.2)
    assert queue.claim(5) is None


def test_jobs_survive_a_new_connection(tmp_path: Path) -> None:
    SqliteJobQueue(tmp_path / "q.db").enqueue("SM1", "ana", {"body": "hola"})
    job = SqliteJobQueue(tmp_path / "q.db").claim(5)
    assert (job.id, job.user, job.data) == ("SM1", "ana", {"body": "hola"})


def test_on_sqlite_only_the_steps_that_stand_before_a_second_send_wait_for_the_disk(
        tmp_path: Path, commits: list[str]) -> None:
    """Enqueue, saved progress and finish flush to disk (synchronous=FULL) before they return; a lease taken,
    renewed or given back with a delay need not (NORMAL: a power cut undoing one only hands the job over)."""
    at_commit = commits
    queue = SqliteJobQueue(tmp_path / "q.db")
    steps = {}

    def step(name: str, done: bool) -> None:
        assert done
        steps[name], at_commit[:] = at_commit[:], []

    step("enqueue", queue.enqueue("SM1", "ana", {}))
    job = queue.claim(5)
    step("claim", job is not None)
    job.data["outgoing"] = ["hola"]
    step("save", queue.save(job))
    step("renew", queue.renew(job, 5))
    step("postpone", queue.postpone(job, 0))
    job = queue.claim(5)
    step("claim again", job is not None)
    step("finish", queue.finish(job))
    step("enqueue after", queue.enqueue("SM2", "ana", {}))  # on a connection the NORMAL steps used before
    assert steps == {"enqueue": ["FULL"], "claim": ["NORMAL"], "save": ["FULL"], "renew": ["NORMAL"],
                     "postpone": ["NORMAL"], "claim again": ["NORMAL"], "finish": ["FULL"], "enqueue after": ["FULL"]}


def test_on_sqlite_an_id_seen_long_ago_is_new_again_and_forgotten_ids_leave_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "SEEN_TTL", -1.0)  # an id is remembered for no time at all
    monkeypatch.setattr(state, "PURGE_SECONDS", 0.0)
    queue = SqliteJobQueue(tmp_path / "queue.db")
    queue._expired_ids._next = float("inf")  # no purge yet: the expired ids stay in the file
    assert queue.enqueue("SM1", "ana", {"n": 1}) and queue.enqueue("SM2", "ana", {"n": 2})
    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("SELECT COUNT(*) FROM queue_seen").fetchone() == (2,)
    queue._expired_ids._next = 0.0  # the next enqueue purges
    assert queue.enqueue("SM1", "ana", {"n": 3})  # its id expired, though still there: a new job, at the lane's end
    taken = []
    while (job := queue.claim(10)) is not None:
        taken.append(job.data["n"])
        queue.finish(job)
    assert taken == [2, 3]
    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("SELECT COUNT(*) FROM queue_seen").fetchone() == (0,)


@pytest.mark.parametrize("skew", [60.0, -60.0])
def test_on_redis_hosts_whose_clocks_disagree_share_leases_by_redis_clock(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    """A host a minute ahead must not take a lease another holds as lapsed (the job would be sent twice); one a
    minute behind must take a lapsed one at once, not a minute late (the user would wait for a dead host)."""
    prefix = f"test-{secrets.token_hex(4)}:"
    holder, other = RedisJobQueue(redis_url, prefix=prefix), RedisJobQueue(redis_url, prefix=prefix)
    holder.enqueue("SM1", "ana", {})
    held = holder.claim(0.5)
    assert held is not None
    monkeypatch.setattr(queue_module, "time", SkewedClock(skew))  # from here on, the other host's clock
    assert other.claim(5) is None
    deadline = time.monotonic() + 5
    while (taken := other.claim(5)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert taken is not None and taken.id == "SM1" and taken.token != held.token
