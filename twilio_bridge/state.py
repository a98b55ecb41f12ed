"""The bridge's own state, shared by every worker and host: SQLite by default, Redis to scale out.

A small key-value interface with expiry. Values are JSON objects.
"""
from __future__ import annotations

import contextvars
import fcntl
import json
import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

Value = dict[str, Any]
Result = TypeVar("Result")
COUNTER_TTL = 400 * 24 * 3600  # counters shown by /health: totals over roughly a year
PURGE_SECONDS = 60.0  # how often each process deletes the expired rows of a SQLite store, as part of a write
CHECKPOINT_EVERY = 0.5  # seconds between a file's checkpoints, while it is being written
CHECKPOINT_IDLE = 30.0  # a file's checkpoint thread ends after this long without writes (the next write starts one)
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")  # SQLite's levels, from the least flushed to the most
# The file, level and connection of the group commit running the current thread's write: a write made inside joins it.
_WRITING: contextvars.ContextVar[tuple[Path, str, sqlite3.Connection] | None] = contextvars.ContextVar(
    "sqlite_writing", default=None)


class StateStore(Protocol):
    def get(self, key: str) -> Value | None: ...
    def put(self, key: str, value: Value, ttl: float) -> None: ...
    def put_many(self, entries: Sequence[tuple[str, Value, float]]) -> None:
        """Store each (key, value, ttl) in one write: all of them, or none when it fails."""
    def add(self, key: str, value: Value, ttl: float) -> bool:
        """Store only if the key is absent (or expired); True when this call stored it."""
    def delete(self, key: str) -> None: ...
    def incr(self, key: str, ttl: float) -> int:
        """Add one to a counter that expires `ttl` seconds after its first increment."""
    def count(self, key: str) -> int:
        """A counter's value; 0 when it does not exist."""
    def ping(self) -> bool: ...


class WriteLock:
    """Writers to one SQLite file take turns here: threads on a lock, processes on flock(2).

    Both wake the next writer the moment the lock is free, where SQLite's own busy handler sleeps in
    steps of up to 100 ms: under a burst of webhooks that sleep was most of the slowest answers.
    One per file and process (`for_file`), shared by every store on the file, and so is the group of
    writes waiting for the next group commit (`SqliteFile.write`): the state store's and the queue's
    writes of one moment go to the file together.
    """

    _open: dict[tuple[int, str], WriteLock] = {}
    _registry = threading.Lock()

    def __init__(self, path: Path):
        self._threads = threading.Lock()
        self._file = open(f"{path}.lock", "a")  # noqa: SIM115 (held for the life of the process)
        self.grouping = threading.Lock()
        self.waiting: list[_Write] = []  # writes for the next group commit, in the order they came
        self.leading = False  # a thread of this process is committing a group, or has been woken to commit the next

    @classmethod
    def for_file(cls, path: Path) -> WriteLock:
        key = (os.getpid(), str(path.resolve()))  # a forked worker needs its own open file for flock
        with cls._registry:
            if key not in cls._open:
                cls._open[key] = cls(path)
            return cls._open[key]

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)


class SqliteFile:
    """One SQLite file opened the bridge's way, for the state store and the queue alike: WAL so readers never
    wait for the writer, writers in turn on the file's `WriteLock`, and a small pool of connections.

    The pool bounds file descriptors (each connection holds the file and its WAL open): a worker runs
    hundreds of threads, and a connection per thread for its life came to about four descriptors per
    thread. A connection is handed out only while one statement or transaction runs, and it recovers
    from faults: one that failed is closed, never reused (a connection opened while the file was
    read-only stays read-only), and one whose file was deleted or replaced is reopened, with the
    schema created again.

    Checkpoints (copying the WAL into the database, with an fsync) run in a thread of their own, never
    in a write: SQLite's automatic checkpoint ran inside the commit that crossed 1000 pages, about one
    webhook in a hundred, holding every writer and taking that webhook from 2.7 to 8 ms (p99).

    Every write is a group commit (`write`): what the threads of one process write to the file at the
    same moment (webhooks' and deliveries' alike, the state store's and the queue's) goes in as one
    transaction, each write of more than one statement in a savepoint of its own when there are several
    (one statement needs none: `execute`), with one flush to disk for all of them; each thread returns
    only once that commit is done. Sixteen webhooks at once had each waited for the fifteen flushes
    before its own, and for the deliveries' (each write its own transaction and lock).
    """

    POOL_SIZE = 16  # connections per file and process; statements last microseconds to milliseconds
    POOL_WAIT = 10.0  # seconds a thread waits for a free connection before the operation fails

    def __init__(self, path: str | Path, synchronous: str = "NORMAL", schema: Sequence[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self.schema = tuple(schema)
        self.writing = WriteLock.for_file(self.path)
        self._idle: list[tuple[sqlite3.Connection, tuple[int, int]]] = []
        self._opened = 0
        self._available = threading.Condition()
        self._pid = os.getpid()
        self._unchecked = False  # written since the last checkpoint
        self._checkpointing_in = 0  # the process whose checkpoint thread runs, 0 when none does

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one statement or transaction; back to the pool after, closed if anything failed."""
        db, identity = self._checkout()
        try:
            yield db
        except BaseException:
            self._discard(db)
            raise
        self._checkin(db, identity)

    def write(self, work: Callable[[sqlite3.Connection], Result], synchronous: str | None = None) -> Result:
        """`work`'s statements committed, flushed as `synchronous` (by default the file's own) asks or more,
        together with whatever other threads of this process write to the file at the same moment (see the
        class); what `work` returns, or what it raised (its statements undone, the others' kept). Returns
        only after the commit that holds them. Called from inside another write to the same file (one store's
        write within another's), it is part of that write, and of its commit.

        `work` may run in another thread (the group's leader): it uses only what it was given, never the
        request's context (Flask's `g`, the log's bound values)."""
        return self._join(_Write(work, synchronous or self.synchronous))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, list[Any]]:
        """One writing statement, committed as `write` commits: the rows it changed, and those it returned.

        In a group it needs no savepoint of its own, as a `write` does: SQLite undoes a statement that fails by
        itself, and nothing runs after it. Each step under the write lock gives up the GIL and must win it back,
        which at 500 calls is most of what a group's commit takes (bench/README.md, "fifth session")."""

        def statement(db: sqlite3.Connection) -> tuple[int, list[Any]]:
            return _changed_and_returned(db.execute(sql, params))

        return self._join(_Write(statement, self.synchronous, one_statement=True))

    def _join(self, mine: _Write) -> Any:
        """`mine` done, by this thread or by the leader of the group it joined (see `write`)."""
        lock = self.writing
        enclosing = _WRITING.get()
        if enclosing is not None and enclosing[0] == self.path:
            return self._within(enclosing[2], mine, enclosing[1])
        with lock.grouping:
            leads, lock.leading = not lock.leading, True
            if not leads:
                mine.woken = threading.Event()  # only a write that waits needs one: the leader's own never does
            lock.waiting.append(mine)
        if mine.woken is not None:
            mine.woken.wait()  # done by a leader, or handed the lead with its write still waiting
        if not mine.done:
            with lock.grouping:
                group, lock.waiting = lock.waiting, []
            try:
                self._commit_group(group)
            except Exception:  # noqa: S110 (each write of the group has its outcome, raised to its own writer below)
                pass
            finally:
                with lock.grouping:
                    following = lock.waiting[0] if lock.waiting else None
                    lock.leading = following is not None
                for write in group:
                    write.wake()
                if following is not None:
                    following.wake()  # one thread woken to lead next, not every waiting one
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[no-any-return]

    def _commit_group(self, group: list[_Write]) -> None:
        """The writes of `group` on one connection of this file (some may be another store's on the same file),
        one transaction for each `synchronous` they ask, the least flushed first: a write that need not reach
        the disk is done, and its writer woken, before the flush that the others wait for. Each write is done,
        with its result or error, when this returns."""
        levels = sorted({write.synchronous for write in group}, key=SYNCHRONOUS.index)
        try:
            with self.connection() as db, self.writing.held():
                current = self.synchronous  # the pool's connections keep the file's own between writes
                for synchronous in levels:
                    if synchronous != current:
                        db.execute(f"PRAGMA synchronous={synchronous}")
                        current = synchronous
                    together = [write for write in group if write.synchronous == synchronous]
                    self._commit(db, together)
                    for write in together:
                        write.done = True
                        write.wake()
                if current != self.synchronous:
                    db.execute(f"PRAGMA synchronous={self.synchronous}")
                failed = next((write.error for write in group if isinstance(write.error, sqlite3.Error)), None)
                if failed is not None:
                    raise _FaultyConnection from failed  # the connection may be at fault: closed, not pooled
        except _FaultyConnection:
            pass
        except BaseException as exc:  # what was not committed: each of its writers raises the fault
            for write in group:
                if not write.done:
                    write.result, write.error = None, exc
            raise
        finally:
            for write in group:
                write.done = True
        self.wrote()

    def _commit(self, db: sqlite3.Connection, together: list[_Write]) -> None:
        """One transaction; with several writes each in a savepoint, so that one that fails is undone alone.
        A write alone needs none (the transaction is its own, and two statements fewer for a voice turn), nor
        does one statement (`execute`): SQLite undoes it by itself, unless the failure ended the transaction
        (a full disk, an I/O error), which fails the group."""
        alone = len(together) == 1
        if alone and together[0].one_statement:
            self._commit_statement(db, together[0])
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for write in together:
                savepoint = not alone and not write.one_statement
                if savepoint:
                    db.execute("SAVEPOINT one_write")
                running = _WRITING.set((self.path, write.synchronous, db))
                try:
                    write.result = write.work(db)
                except Exception as exc:  # noqa: BLE001 (that writer's to raise, not the group's)
                    write.error = exc
                    if alone:
                        if db.in_transaction:  # else the failure ended it (a full disk): nothing to undo
                            db.execute("ROLLBACK")
                        return
                    if savepoint:
                        db.execute("ROLLBACK TO one_write")
                    elif not db.in_transaction:
                        raise
                finally:
                    _WRITING.reset(running)
                if savepoint:
                    db.execute("RELEASE one_write")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _commit_statement(db: sqlite3.Connection, write: _Write) -> None:
        """One statement alone is its own transaction: SQLite commits it, or undoes it when it fails, with no
        BEGIN and COMMIT of ours around it (two of a voice turn's seven statements, each a lock or a flush step
        under the write lock). A failure that leaves a transaction open (SQLite never should) is undone."""
        try:
            write.result = write.work(db)
        except Exception as exc:  # noqa: BLE001 (that writer's to raise)
            write.error = exc
            if db.in_transaction:
                db.execute("ROLLBACK")

    @staticmethod
    def _within(db: sqlite3.Connection, write: _Write, enclosing: str) -> Any:
        """A write inside another's: its statements in a savepoint of the enclosing one's transaction."""
        if SYNCHRONOUS.index(write.synchronous) > SYNCHRONOUS.index(enclosing):
            raise ValueError(f"a synchronous={write.synchronous} write inside a {enclosing} one would not be flushed")
        db.execute("SAVEPOINT inner_write")
        try:
            result = write.work(db)
        except BaseException:
            db.execute("ROLLBACK TO inner_write")
            db.execute("RELEASE inner_write")
            raise
        db.execute("RELEASE inner_write")
        return result

    def wrote(self) -> None:
        """After every write: the WAL it grew goes into the database within CHECKPOINT_EVERY, off the writer's path."""
        self._unchecked = True
        if self._checkpointing_in == os.getpid():
            return
        with self._available:
            if self._checkpointing_in == os.getpid():
                return
            self._checkpointing_in = os.getpid()  # threads do not survive a fork: each process starts its own
        threading.Thread(target=_checkpoint_while_written, args=(weakref.ref(self),),
                         name=f"checkpoint-{self.path.name}", daemon=True).start()

    def checkpoint(self) -> None:
        """PASSIVE: copies what it can without waiting for readers or writers, and never makes them wait."""
        self._unchecked = False
        try:
            with self.connection() as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # noqa: BLE001 (a fault of the file, which the next write meets and reports: tried again next time)
            self._unchecked = True

    def _stop_checkpointing(self) -> bool:
        """The checkpoint thread ends unless a write came in meanwhile."""
        with self._available:
            if self._unchecked:
                return False
            self._checkpointing_in = 0
            return True

    def _checkout(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        identity = self._file_identity()
        deadline = time.monotonic() + self.POOL_WAIT
        with self._available:
            if self._pid != os.getpid():  # connections must not cross a fork: this process opens its own
                self._idle, self._opened, self._pid = [], 0, os.getpid()
            while True:
                while self._idle:
                    db, opened_on = self._idle.pop()
                    if opened_on == identity:
                        return db, identity
                    self._opened -= 1  # the file was deleted or replaced since: this one writes to nowhere
                    db.close()
                if self._opened < self.POOL_SIZE:
                    self._opened += 1
                    break
                if not self._available.wait(max(0.0, deadline - time.monotonic())):
                    raise sqlite3.OperationalError(f"no free connection to {self.path} within {self.POOL_WAIT:g}s")
        try:
            return self._open(), self._file_identity()
        except BaseException:
            with self._available:
                self._opened -= 1
                self._available.notify()
            raise

    def _checkin(self, db: sqlite3.Connection, identity: tuple[int, int]) -> None:
        with self._available:
            self._idle.append((db, identity))
            self._available.notify()

    def _discard(self, db: sqlite3.Connection) -> None:
        with self._available:
            self._opened -= 1
            self._available.notify()
        try:
            db.close()
        except sqlite3.Error:
            pass

    def _file_identity(self) -> tuple[int, int]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0)
        return stat.st_dev, stat.st_ino

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            # One opening at a time, across threads and processes: connections that turn a new file to WAL
            # together get "database is locked" at once, without SQLite's busy wait (gunicorn's workers
            # starting on a new file; tests/test_state_faults.py).
            with self.writing.held():
                db.execute("PRAGMA journal_mode=WAL")
                for statement in self.schema:  # a file deleted and recreated under a running bridge gets its tables back
                    db.execute(statement)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it (see the class)
        except BaseException:
            db.close()
            raise
        return db


def _changed_and_returned(cursor: sqlite3.Cursor) -> tuple[int, list[Any]]:
    """A writing statement's rows changed and rows returned: with RETURNING, the count is known once they are read."""
    returned = cursor.fetchall()
    return cursor.rowcount, returned


class _Write:
    """One thread's write waiting for, or done by, a group commit."""

    __slots__ = ("work", "synchronous", "one_statement", "woken", "done", "result", "error")

    def __init__(self, work: Callable[[sqlite3.Connection], Any], synchronous: str, one_statement: bool = False):
        self.work, self.synchronous, self.one_statement = work, synchronous, one_statement
        self.woken: threading.Event | None = None  # set by SqliteFile._join when the write must wait for a leader
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def wake(self) -> None:
        """The writer waiting for this write, if one is: done, or its turn to lead."""
        if self.woken is not None:
            self.woken.set()


class _FaultyConnection(Exception):
    """A group committed, but one of its writes met a fault of SQLite's: the connection is not pooled again."""


def _checkpoint_while_written(ref: weakref.ref[SqliteFile]) -> None:
    """A file's checkpoint thread, in one process: alive while the file is written and still in use."""
    idle_since = time.monotonic()
    while True:
        time.sleep(CHECKPOINT_EVERY)
        file = ref()
        if file is None:
            return
        if file._unchecked:
            file.checkpoint()
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > CHECKPOINT_IDLE and file._stop_checkpointing():
            return
        del file  # no reference while asleep: a file nobody uses any more goes, and this thread with it


class ExpiredRows:
    """A table's expired rows, deleted as part of a write at most every PURGE_SECONDS in each process."""

    def __init__(self, table: str):
        self._delete = f"DELETE FROM {table} WHERE expires <= ?"
        self._next = 0.0

    def due(self) -> bool:
        """Whether a write should delete them now: PURGE_SECONDS after the last purge of this process."""
        return time.monotonic() >= self._next

    def purge(self, db: sqlite3.Connection) -> None:
        self._next = time.monotonic() + PURGE_SECONDS
        db.execute(self._delete, (time.time(),))

    def purge_now_and_then(self, db: sqlite3.Connection) -> None:
        if self.due():
            self.purge(db)


class SqliteStore:
    """Expired rows are invisible at once and deleted within PURGE_SECONDS: every message leaves keys
    (its sid, the user's menu and rate counter) that would otherwise stay in the file for ever."""

    ROWS_PER_STATEMENT = 300  # 900 variables: within every SQLite build's limit (999 before 3.32)
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires)",
    )

    def __init__(self, path: str | Path):
        self.file = SqliteFile(path, schema=self.SCHEMA)
        self._expired = ExpiredRows("kv")
        with self.file.connection():
            pass  # opening the first connection creates the table

    def _read(self, key: str) -> Any:
        with self.file.connection() as db:
            row = db.execute("SELECT value FROM kv WHERE key = ? AND expires > ?", (key, time.time())).fetchone()
        return row[0] if row else None

    def get(self, key: str) -> Value | None:
        raw = self._read(key)
        return json.loads(raw) if raw is not None else None

    def _write(self, sql: str, params: Sequence[Any]) -> tuple[int, list[Any]]:
        """One writing statement, committed with the other threads' (group commit): rows changed, rows returned.
        Now and then the write deletes the expired rows too, and is then two statements (SqliteFile.write)."""
        if not self._expired.due():
            return self.file.execute(sql, params)

        def and_purge(db: sqlite3.Connection) -> tuple[int, list[Any]]:
            done = _changed_and_returned(db.execute(sql, params))
            self._expired.purge(db)
            return done

        return self.file.write(and_purge)

    def put(self, key: str, value: Value, ttl: float) -> None:
        self.put_many([(key, value, ttl)])

    def put_many(self, entries: Sequence[tuple[str, Value, float]]) -> None:
        """All of them or none: one statement for up to ROWS_PER_STATEMENT entries (a statement that fails
        leaves nothing), else a statement for each in one write."""
        now = time.time()
        rows = [(key, json.dumps(value), now + ttl) for key, value, ttl in entries]
        if len(rows) > self.ROWS_PER_STATEMENT:
            self.file.write(lambda db: db.executemany(self._upsert(1), rows))
        elif rows:
            self._write(self._upsert(len(rows)), [field for row in rows for field in row])

    @staticmethod
    def _upsert(rows: int) -> str:
        return (f"INSERT INTO kv (key, value, expires) VALUES {', '.join(['(?, ?, ?)'] * rows)} "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires")

    def add(self, key: str, value: Value, ttl: float) -> bool:
        now = time.time()
        changed, _ = self._write(
            "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires WHERE kv.expires <= ?",
            (key, json.dumps(value), now + ttl, now),
        )
        return changed == 1

    def delete(self, key: str) -> None:
        self._write("DELETE FROM kv WHERE key = ?", (key,))

    def incr(self, key: str, ttl: float) -> int:
        now = time.time()
        _, rows = self._write(
            "INSERT INTO kv (key, value, expires) VALUES (?, '1', ?) "
            "ON CONFLICT(key) DO UPDATE SET "
            "value = CASE WHEN kv.expires <= ? THEN '1' ELSE CAST(CAST(kv.value AS INTEGER) + 1 AS TEXT) END, "
            "expires = CASE WHEN kv.expires <= ? THEN excluded.expires ELSE kv.expires END "
            "RETURNING value",
            (key, now + ttl, now, now),
        )
        return int(rows[0][0])

    def count(self, key: str) -> int:
        raw = self._read(key)
        return int(raw) if raw is not None else 0

    def ping(self) -> bool:
        with self.file.connection() as db:
            return db.execute("SELECT 1").fetchone() == (1,)


def redis_client(url: str) -> Any:
    """A client of the Redis that STATE_URL names; imported here, so SQLite deployments need no redis package."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)


REDIS_MINIMUM = (7, 0)  # counters expire from their first increment with PEXPIRE … NX, new in Redis 7.0


def redis_too_old(url: str) -> str | None:
    """Why the Redis that STATE_URL names cannot hold the bridge's state, or None. An unreachable Redis
    is not refused here: it may be restarting, and the store recovers once it answers."""
    client = redis_client(url)
    try:
        version = str(client.info("server")["redis_version"])
    except Exception:
        return None
    finally:
        client.close()
    if tuple(int(part) for part in version.split(".")[:2] if part.isdecimal()) >= REDIS_MINIMUM:
        return None
    return f"Redis {version} is too old: the bridge needs Redis 7.0 or later (PEXPIRE … NX)"


class RedisStore:
    def __init__(self, url: str, prefix: str = "twilio-bridge:"):
        self.redis = redis_client(url)
        self.prefix = prefix

    def get(self, key: str) -> Value | None:
        raw = self.redis.get(self.prefix + key)
        return json.loads(raw) if raw is not None else None

    def put(self, key: str, value: Value, ttl: float) -> None:
        self.redis.set(self.prefix + key, json.dumps(value), px=int(ttl * 1000))

    def put_many(self, entries: Sequence[tuple[str, Value, float]]) -> None:
        pipe = self.redis.pipeline()  # MULTI … EXEC: one round trip, applied together
        for key, value, ttl in entries:
            pipe.set(self.prefix + key, json.dumps(value), px=int(ttl * 1000))
        pipe.execute()

    def add(self, key: str, value: Value, ttl: float) -> bool:
        return bool(self.redis.set(self.prefix + key, json.dumps(value), px=int(ttl * 1000), nx=True))

    def delete(self, key: str) -> None:
        self.redis.delete(self.prefix + key)

    def incr(self, key: str, ttl: float) -> int:
        pipe = self.redis.pipeline()
        pipe.incr(self.prefix + key)
        pipe.pexpire(self.prefix + key, int(ttl * 1000), nx=True)
        count, _ = pipe.execute()
        return int(count)

    def count(self, key: str) -> int:
        return int(self.redis.get(self.prefix + key) or 0)

    def ping(self) -> bool:
        return bool(self.redis.ping())


def backend(url: str) -> tuple[str, str]:
    """`sqlite:///relative/or//absolute/path.db` → ("sqlite", its path); `redis://host:port/db` → ("redis", it)."""
    if url.startswith("sqlite:///"):
        return "sqlite", url.removeprefix("sqlite:///")
    if url.startswith(("redis://", "rediss://")):
        return "redis", url
    raise ValueError(f"unsupported STATE_URL scheme: {url.split(':', 1)[0]}")


def open_store(url: str) -> StateStore:
    kind, where = backend(url)
    return SqliteStore(where) if kind == "sqlite" else RedisStore(where)
