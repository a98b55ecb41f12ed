"""The bridge's own state, shared by every worker and host: SQLite by default, Redis to scale out.

A small key-value interface with expiry. Values are JSON objects.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

Value = dict[str, Any]
COUNTER_TTL = 400 * 24 * 3600  # counters shown by /health: totals over roughly a year
PURGE_SECONDS = 60.0  # how often each process deletes the expired rows of a SQLite store, as part of a write


class StateStore(Protocol):
    def get(self, key: str) -> Value | None: ...
    def put(self, key: str, value: Value, ttl: float) -> None: ...
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
    One per file and process (`for_file`), shared by every store on the file.
    """

    _open: dict[tuple[int, str], WriteLock] = {}
    _registry = threading.Lock()

    def __init__(self, path: Path):
        self._threads = threading.Lock()
        self._file = open(f"{path}.lock", "a")  # noqa: SIM115 (held for the life of the process)

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
    """One SQLite file opened the bridge's way, for the state store and the queue alike: a connection per
    thread, WAL so readers never wait for the writer, and writers in turn on the file's `WriteLock`."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self.writing = WriteLock.for_file(self.path)
        self._local = threading.local()

    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one write, in turn with every other writer."""
        db = self.db()
        with self.writing.held():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


class SqliteStore:
    """Expired rows are invisible at once and deleted within PURGE_SECONDS: every message leaves keys
    (its sid, the user's menu and rate counter) that would otherwise stay in the file for ever."""

    def __init__(self, path: str | Path):
        self.file = SqliteFile(path)
        self._db = self.file.db
        self._next_purge = 0.0
        with self.file.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires)")

    def get(self, key: str) -> Value | None:
        row = self._db().execute("SELECT value FROM kv WHERE key = ? AND expires > ?", (key, time.time())).fetchone()
        return json.loads(row[0]) if row else None

    def _write(self, sql: str, params: tuple[Any, ...]) -> tuple[int, list[Any]]:
        """One writing statement, in turn with every other writer: rows changed, rows returned."""
        with self.file.writing.held():
            cursor = self._db().execute(sql, params)
            done = cursor.rowcount, cursor.fetchall()
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + PURGE_SECONDS
                self._db().execute("DELETE FROM kv WHERE expires <= ?", (time.time(),))
            return done

    def put(self, key: str, value: Value, ttl: float) -> None:
        self._write(
            "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
            (key, json.dumps(value), time.time() + ttl),
        )

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
        row = self._db().execute("SELECT value FROM kv WHERE key = ? AND expires > ?", (key, time.time())).fetchone()
        return int(row[0]) if row else 0

    def ping(self) -> bool:
        return self._db().execute("SELECT 1").fetchone() == (1,)


def redis_client(url: str) -> Any:
    """A client of the Redis that STATE_URL names; imported here, so SQLite deployments need no redis package."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)


class RedisStore:
    def __init__(self, url: str, prefix: str = "twilio-bridge:"):
        self.redis = redis_client(url)
        self.prefix = prefix

    def get(self, key: str) -> Value | None:
        raw = self.redis.get(self.prefix + key)
        return json.loads(raw) if raw is not None else None

    def put(self, key: str, value: Value, ttl: float) -> None:
        self.redis.set(self.prefix + key, json.dumps(value), px=int(ttl * 1000))

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
