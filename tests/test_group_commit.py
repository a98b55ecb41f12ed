"""Group commit on SQLite: writes made at the same moment share one transaction and one flush to disk,
each writer returns only once its own write is committed, and a process killed mid-group loses
nothing it had acknowledged."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from twilio_bridge.delivery.queue import SqliteJobQueue
from twilio_bridge.state import SqliteFile, SqliteStore, WriteLock

from tests.servers import ROOT, wait_for

WRITERS = 12


def committed_ids(path: Path) -> set[str]:
    """What another process would find in the file: a connection of its own, opened now."""
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM queue_jobs")}


def queued_behind_a_held_lock(file: SqliteFile, write: Callable[[int], Any], count: int) -> list[Future]:
    """`count` threads call `write(n)` while the file's write lock is held elsewhere, so that all but the
    first (the leader, blocked on the lock) gather into one group; the futures, once the lock is free."""
    lock = WriteLock.for_file(file.path)
    pool = ThreadPoolExecutor(count)
    with lock.held():
        leader = pool.submit(write, 0)
        wait_for(lambda: file.writing.leading, seconds=5)
        futures = [leader, *(pool.submit(write, n) for n in range(1, count))]
        wait_for(lambda: len(file.writing.waiting) == count - 1, seconds=5)
        assert not any(future.done() for future in futures)  # none can answer before a commit holds its write
    pool.shutdown(wait=True)
    return futures


def test_enqueues_at_the_same_moment_share_one_commit_and_each_returns_after_it(
        tmp_path: Path, commits: list[str]) -> None:
    queue = SqliteJobQueue(tmp_path / "state.db")

    def enqueue(n: int) -> bool:
        accepted = queue.enqueue(f"SM{n}", f"user{n % 3}", {"n": n})
        return accepted and f"SM{n}" in committed_ids(tmp_path / "state.db")  # visible to others on return

    commits.clear()
    futures = queued_behind_a_held_lock(queue.file, enqueue, WRITERS)
    assert [future.result() for future in futures] == [True] * WRITERS
    assert commits == ["FULL", "FULL"]  # the leader's own, then one for the eleven that gathered behind it
    assert committed_ids(tmp_path / "state.db") == {f"SM{n}" for n in range(WRITERS)}
    first, _second = queue.claim(5), queue.claim(5)
    assert first.id == "SM0" and not queue.enqueue("SM5", "user2", {})  # lanes in order, ids taken once


def test_the_state_stores_writes_and_the_queues_go_in_together_the_stores_not_waiting_for_the_flush(
        tmp_path: Path, commits: list[str]) -> None:
    store, queue = SqliteStore(tmp_path / "state.db"), SqliteJobQueue(tmp_path / "state.db")

    def write(n: int) -> object:
        if n % 2:
            return queue.enqueue(f"SM{n}", "ana", {"n": n})
        return store.incr("whatsapp:rate:ana", 60)

    commits.clear()
    futures = queued_behind_a_held_lock(store.file, write, WRITERS)
    results = [future.result() for future in futures]
    assert results[1::2] == [True] * (WRITERS // 2) and sorted(results[::2]) == list(range(1, WRITERS // 2 + 1))
    # the store's first write alone; then, in one turn on the file, the store's five and the queue's six, flushed
    assert commits == ["NORMAL", "NORMAL", "FULL"]
    store.put("alone", {}, 60)
    assert commits[3:] == ["NORMAL"]  # a connection the group flushed went back to the store's own setting


def test_a_write_that_fails_in_a_group_is_undone_alone_and_raised_to_its_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")

    def write(n: int) -> int:
        if n == 5:
            return store.file.write(lambda db: (db.execute("INSERT INTO kv VALUES ('half', '{}', 1e12)"),
                                                db.execute("INSERT INTO no_such_table VALUES (1)")))
        return store.incr("messages", 60)

    futures = queued_behind_a_held_lock(store.file, write, WRITERS)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        futures[5].result()
    counts = sorted(future.result() for n, future in enumerate(futures) if n != 5)
    assert counts == list(range(1, WRITERS))  # each increment counted once, the failing write's first half undone
    assert store.count("messages") == WRITERS - 1 and store.get("half") is None
    store.put("after", {"ok": True}, 60)  # the file is still writable, by a connection that did not fail
    assert store.get("after") == {"ok": True}


def test_a_write_alone_that_fails_is_undone_whole_without_a_savepoint(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("before", {"ok": True}, 60)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        store.file.write(lambda db: (db.execute("INSERT INTO kv VALUES ('half', '{}', 1e12)"),
                                     db.execute("INSERT INTO no_such_table VALUES (1)")))
    assert store.get("half") is None and store.get("before") == {"ok": True}
    store.put("after", {"ok": True}, 60)
    assert store.get("after") == {"ok": True}


def test_a_commit_that_fails_fails_every_write_of_its_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path / "state.db")
    connection = store.file.connection

    @contextmanager
    def failing_at_commit() -> Iterator[CommitFails]:  # as a full or failing disk does
        with connection() as db:
            yield CommitFails(db)

    monkeypatch.setattr(store.file, "connection", failing_at_commit)
    futures = queued_behind_a_held_lock(store.file, lambda n: store.put(f"lost{n}", {"n": n}, 60), 4)
    for future in futures:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            future.result()
    monkeypatch.undo()
    assert [store.get(f"lost{n}") for n in range(4)] == [None] * 4
    store.put("after", {"ok": True}, 60)
    assert store.get("after") == {"ok": True}


class CommitFails:
    """A connection whose commits fail: a COMMIT, or a writing statement that is its own transaction."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" or (sql.startswith(("INSERT", "UPDATE", "DELETE")) and not self.db.in_transaction):
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.db.executemany(sql, rows)


def connections_wrapped(store: SqliteStore, wrap: Callable[[sqlite3.Connection], Any],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's connections handed out wrapped, until monkeypatch.undo(): a fault injected."""
    connection = store.file.connection

    @contextmanager
    def wrapped() -> Iterator[Any]:
        with connection() as db:
            yield wrap(db)

    monkeypatch.setattr(store.file, "connection", wrapped)


def traced_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement that a connection opened from here on runs."""
    seen: list[str] = []
    opened = SqliteFile._open

    def traced(self: SqliteFile) -> sqlite3.Connection:
        db = opened(self)
        db.set_trace_callback(seen.append)
        return db

    monkeypatch.setattr(SqliteFile, "_open", traced)
    return seen


def test_the_stores_writes_in_a_group_need_no_savepoints_and_one_that_fails_is_undone_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements = traced_statements(monkeypatch)
    store = SqliteStore(tmp_path / "state.db")
    store.put("taken", {}, 60)  # a fresh store's first write also purges: two statements, the general path

    def write(n: int) -> object:
        if n == 5:
            return store.file.execute("INSERT INTO kv VALUES ('taken', '{}', 1e12)")
        if n == 7:
            return store.put_many([("both1", {"n": 1}, 60), ("both2", {"n": 2}, 60)])
        return store.incr("messages", 60)

    statements.clear()
    futures = queued_behind_a_held_lock(store.file, write, WRITERS)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        futures[5].result()
    counts = sorted(future.result() for n, future in enumerate(futures) if n not in (5, 7))
    assert counts == list(range(1, WRITERS - 1)) and futures[7].result() is None
    assert store.get("taken") == {} and (store.get("both1"), store.get("both2")) == ({"n": 1}, {"n": 2})
    # the leader's one statement is its own transaction; the group's eleven share one
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert statements[0].startswith("INSERT INTO kv") and statements[1] == "BEGIN IMMEDIATE"
    assert not [sql for sql in statements if "SAVEPOINT" in sql or sql.startswith("RELEASE")]


def test_a_failure_that_ends_the_transaction_fails_the_writes_after_it_rather_than_committing_them_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("before", {"ok": True}, 60)
    connections_wrapped(store, lambda db: TransactionEnds(db, "lost2"), monkeypatch)  # as a full disk does
    futures = queued_behind_a_held_lock(store.file, lambda n: store.put(f"lost{n}", {"n": n}, 60), 5)
    assert futures[0].result() is None  # the leader's own write, alone, before the group
    for future in futures[1:]:
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            future.result()
    monkeypatch.undo()
    assert [store.get(f"lost{n}") for n in range(1, 5)] == [None] * 4 and store.get("lost0") == {"n": 0}
    store.put("after", {"ok": True}, 60)
    assert store.get("after") == {"ok": True} and store.get("before") == {"ok": True}


def test_a_write_alone_whose_failure_ended_the_transaction_raises_that_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put("before", {"ok": True}, 60)
    connections_wrapped(store, lambda db: TransactionEnds(db, "lost"), monkeypatch)  # as a full disk does
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        store.put("lost", {}, 60)
    monkeypatch.undo()
    assert store.get("lost") is None
    store.put("after", {"ok": True}, 60)
    assert store.get("after") == {"ok": True}


def test_the_leader_of_a_group_returns_its_own_write_committed_when_a_more_flushed_part_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, queue = SqliteStore(tmp_path / "state.db"), SqliteJobQueue(tmp_path / "state.db")
    store.put("first", {}, 60)  # a fresh store's first write also purges

    def write(n: int) -> object:
        return store.put(f"kept{n}", {"n": n}, 60) if n < 2 else queue.enqueue(f"SM{n}", "ana", {"n": n})

    connections_wrapped(store, FlushedCommitFails, monkeypatch)
    futures = queued_behind_a_held_lock(store.file, write, 4)  # 0 alone; 1 leads the group of 1, 2 and 3
    assert [futures[0].result(), futures[1].result()] == [None, None]  # committed: the store's part comes first
    for future in futures[2:]:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            future.result()
    monkeypatch.undo()
    assert store.get("kept0") == {"n": 0} and store.get("kept1") == {"n": 1} and queue.pending() == 0


class FlushedCommitFails:
    """A connection on which a commit under synchronous=FULL fails, as a failing disk's flush does."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.full = db, False

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA synchronous="):
            self.full = sql.endswith("FULL")
        if sql == "COMMIT" and self.full:
            self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.db.executemany(sql, rows)


class TransactionEnds:
    """A connection on which the statement naming `key` fails, and SQLite rolls the whole transaction back."""

    def __init__(self, db: sqlite3.Connection, key: str):
        self.db, self.key = db, key

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if args and self.key in args[0]:
            if self.db.in_transaction:  # a statement that is its own transaction has nothing else to undo
                self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)


ENQUEUE_UNTIL_KILLED = """
import sys, threading
from twilio_bridge.delivery.queue import SqliteJobQueue
queue = SqliteJobQueue(sys.argv[1])
said = threading.Lock()
def enqueue(writer):
    for n in range(100000):
        job = f"SM{writer}-{n}"
        assert queue.enqueue(job, f"user{writer}", {"n": n})
        with said:
            print(job, flush=True)  # acknowledged, as a webhook's 200 would be
for writer in range(16):
    threading.Thread(target=enqueue, args=(writer,)).start()
"""


def test_a_process_killed_in_the_middle_of_group_commits_loses_no_acknowledged_write(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    writer = subprocess.Popen([sys.executable, "-c", ENQUEUE_UNTIL_KILLED, str(database)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    acknowledged = []
    try:
        assert writer.stdout is not None
        while len(acknowledged) < 500:
            line = writer.stdout.readline()
            assert line, "the writer ended before it was killed"
            acknowledged.append(line.strip())
        writer.send_signal(signal.SIGKILL)
        acknowledged += [line.strip() for line in writer.stdout]  # said before the kill, read after
    finally:
        writer.kill()
        writer.wait(10)
    stored = committed_ids(database)
    assert set(acknowledged) <= stored
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    queue = SqliteJobQueue(database)
    for lane in range(16):  # each user's jobs in the order they were enqueued, with no gap
        numbers = [int(job.split("-")[1]) for job in sorted(stored) if job.startswith(f"SM{lane}-")]
        assert sorted(numbers) == list(range(len(numbers)))
    assert queue.pending() == len(stored)


def test_the_rate_count_and_the_message_are_one_write_and_a_message_seen_before_is_not_counted(
        tmp_path: Path, commits: list[str]) -> None:
    store, queue = SqliteStore(tmp_path / "state.db"), SqliteJobQueue(tmp_path / "state.db")

    def admit_below(limit: int) -> Callable[[], dict[str, Any] | None]:
        return lambda: {"n": 1} if store.incr("rate:ana", 60) <= limit else None

    commits.clear()
    assert queue.offer("SM1", "ana", admit_below(1)) is True
    assert commits == ["FULL"]  # the count inside the queue's own write, flushed with it
    assert queue.offer("SM1", "ana", admit_below(1)) is False and store.count("rate:ana") == 1
    assert queue.offer("SM2", "ana", admit_below(1)) is None  # turned away: counted, not stored
    assert store.count("rate:ana") == 2 and committed_ids(tmp_path / "state.db") == {"SM1"}


def test_a_write_inside_another_is_undone_with_it_and_may_not_ask_for_more_than_it(tmp_path: Path) -> None:
    store, queue = SqliteStore(tmp_path / "state.db"), SqliteJobQueue(tmp_path / "state.db")

    def count_then_fail() -> dict[str, Any]:
        store.incr("rate:ana", 60)
        raise ValueError("refused after counting")

    with pytest.raises(ValueError, match="after counting"):
        queue.offer("SM1", "ana", count_then_fail)
    assert store.count("rate:ana") == 0 and queue.pending() == 0
    with pytest.raises(ValueError, match="would not be flushed"):
        store.file.write(lambda db: queue.enqueue("SM2", "ana", {}))  # a FULL write inside a NORMAL one
    assert queue.pending() == 0
