"""A durable queue of jobs, one FIFO lane per user: SQLite by default, Redis for several hosts.

Why not huey: huey removes a task from storage before running it, so a worker killed mid-task
loses it, and it has no per-key ordering. Here a job stays stored until `finish`; a worker holds a
*lease* on the job's user (kept alive by a heartbeat), and a lease that runs out (the process died)
lets any other worker take the same job again. Only the head of a user's lane can be claimed, so
one user's messages run one at a time, in order, while other users' lanes go on in parallel.

Every write after `claim` names the lease's token: a worker that lost its lease cannot change the job.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from ..state import ExpiredRows, SqliteFile, backend, redis_client

SEEN_TTL = 3 * 24 * 3600  # how long a job id is remembered after it was enqueued, for Twilio's retries
# SQLite: what a power cut may undo. Each commit survives the process being killed (WAL), and reaches the disk
# no later than the next flushed one. Flushed (FULL) before the call returns: an enqueue (Twilio has its 200
# after it), the saved answer and each message marked sent (they stand between the job and a second Rasa call
# or a second send), the finish. Not flushed (NORMAL), as undoing them sends nothing twice: a lease taken or
# renewed (undone, the job is taken again at its first unsaved step, as after a crash) and a postponement
# (undone, the job is tried again sooner, its attempt count one lower).
LEASE_ONLY = "NORMAL"


@dataclass
class Job:
    id: str
    user: str
    data: dict[str, Any]
    token: str


class JobQueue(Protocol):
    def enqueue(self, job_id: str, user: str, data: dict[str, Any]) -> bool:
        """Store a job at the end of its user's lane; False (and nothing stored) when the id was seen before."""
    def offer(self, job_id: str, user: str, admit: Callable[[], dict[str, Any] | None]) -> bool | None:
        """`enqueue` of what `admit()` returns, asked only when the id is new (on Redis, when it was not seen a
        moment before): False when it was seen before, None when `admit` turned the job away (nothing stored),
        True when stored. On SQLite, the state store's writes that `admit` makes are part of the same commit."""
    def seen(self, job_id: str) -> bool: ...
    def claim(self, lease: float) -> Job | None:
        """The head job of a lane that is due and not leased, leased for `lease` seconds."""
    def renew(self, job: Job, lease: float) -> bool: ...
    def save(self, job: Job) -> bool:
        """Store the job's progress; False when the lease was lost."""
    def postpone(self, job: Job, delay: float) -> bool:
        """Save, release the lease, and hold the whole lane back for `delay` seconds (order is kept)."""
    def finish(self, job: Job) -> bool:
        """Remove the job; the lane's next job becomes due."""
    def pending(self) -> int: ...


class SqliteJobQueue:
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS queue_jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,"
        " user TEXT NOT NULL, data TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS queue_jobs_lane ON queue_jobs (user, seq)",
        "CREATE TABLE IF NOT EXISTS queue_lanes (user TEXT PRIMARY KEY, due REAL NOT NULL, token TEXT)",
        "CREATE INDEX IF NOT EXISTS queue_lanes_due ON queue_lanes (due)",
        "CREATE TABLE IF NOT EXISTS queue_seen (id TEXT PRIMARY KEY, expires REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS queue_seen_expires ON queue_seen (expires)",  # the purge goes by it
    )

    def __init__(self, path: str | Path):
        # synchronous=FULL: a job acknowledged to Twilio must survive a power cut (LEASE_ONLY: the steps after)
        self.file = SqliteFile(path, synchronous="FULL", schema=self.SCHEMA)
        self._read = self.file.connection
        self._expired_ids = ExpiredRows("queue_seen")  # by an enqueue, now and then
        with self._read():
            pass  # opening the first connection creates the tables

    def enqueue(self, job_id: str, user: str, data: dict[str, Any]) -> bool:
        return bool(self.offer(job_id, user, lambda: data))

    def offer(self, job_id: str, user: str, admit: Callable[[], dict[str, Any] | None]) -> bool | None:
        """One write, committed with the other writes of this process's threads: one flush to disk for all of them."""
        now = time.time()

        def store(db: sqlite3.Connection) -> bool | None:
            if db.execute("SELECT 1 FROM queue_seen WHERE id = ? AND expires > ?", (job_id, now)).fetchone():
                return False
            data = admit()
            if data is None:
                return None
            db.execute("INSERT INTO queue_seen (id, expires) VALUES (?, ?) ON CONFLICT(id) DO UPDATE"
                       " SET expires = excluded.expires", (job_id, now + SEEN_TTL))
            # REPLACE: a job left under this id (seen long ago) goes, and this one joins the end of the lane
            db.execute("REPLACE INTO queue_jobs (id, user, data) VALUES (?, ?, ?)", (job_id, user, json.dumps(data)))
            db.execute("INSERT INTO queue_lanes (user, due) VALUES (?, ?) ON CONFLICT(user) DO NOTHING", (user, now))
            self._expired_ids.purge_now_and_then(db)
            return True

        return self.file.write(store)

    def seen(self, job_id: str) -> bool:
        with self._read() as db:
            row = db.execute("SELECT 1 FROM queue_seen WHERE id = ? AND expires > ?", (job_id, time.time()))
            return row.fetchone() is not None

    def claim(self, lease: float) -> Job | None:
        now = time.time()
        with self._read() as db:
            if db.execute("SELECT 1 FROM queue_lanes WHERE due <= ? LIMIT 1", (now,)).fetchone() is None:
                return None  # the common idle case takes no write lock

        def lease_head(db: sqlite3.Connection) -> Job | None:
            while True:
                lane = db.execute("SELECT user FROM queue_lanes WHERE due <= ? ORDER BY due LIMIT 1", (now,)).fetchone()
                if lane is None:
                    return None
                head = db.execute("SELECT id, data FROM queue_jobs WHERE user = ? ORDER BY seq LIMIT 1", lane).fetchone()
                if head is not None:
                    break
                db.execute("DELETE FROM queue_lanes WHERE user = ?", lane)
            token = secrets.token_hex(8)
            db.execute("UPDATE queue_lanes SET due = ?, token = ? WHERE user = ?", (now + lease, token, lane[0]))
            return Job(head[0], lane[0], json.loads(head[1]), token)

        return self.file.write(lease_head, LEASE_ONLY)

    def renew(self, job: Job, lease: float) -> bool:
        return self.file.write(lambda db: db.execute(
            "UPDATE queue_lanes SET due = ? WHERE user = ? AND token = ?", (time.time() + lease, job.user, job.token),
        ).rowcount == 1, LEASE_ONLY)

    def save(self, job: Job) -> bool:
        return self.file.write(lambda db: db.execute(
            "UPDATE queue_jobs SET data = ? WHERE id = ?"
            " AND EXISTS (SELECT 1 FROM queue_lanes WHERE user = ? AND token = ?)",
            (json.dumps(job.data), job.id, job.user, job.token),
        ).rowcount == 1)

    def postpone(self, job: Job, delay: float) -> bool:
        def release_for_later(db: sqlite3.Connection) -> bool:
            if not self._release(db, job, time.time() + delay):
                return False
            db.execute("UPDATE queue_jobs SET data = ? WHERE id = ?", (json.dumps(job.data), job.id))
            return True

        return self.file.write(release_for_later, LEASE_ONLY)

    def finish(self, job: Job) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            if not self._release(db, job, time.time()):
                return False
            db.execute("DELETE FROM queue_jobs WHERE id = ?", (job.id,))
            if db.execute("SELECT 1 FROM queue_jobs WHERE user = ? LIMIT 1", (job.user,)).fetchone() is None:
                db.execute("DELETE FROM queue_lanes WHERE user = ?", (job.user,))
            return True

        return self.file.write(remove)

    def pending(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM queue_jobs").fetchone()[0])

    @staticmethod
    def _release(db: sqlite3.Connection, job: Job, due: float) -> bool:
        return db.execute(
            "UPDATE queue_lanes SET due = ?, token = NULL WHERE user = ? AND token = ?", (due, job.user, job.token)
        ).rowcount == 1


# Redis: a hash of jobs, one list per lane, a sorted set of lanes by due time, a hash of lease tokens.
# Each operation is one Lua script, so it is atomic; lane keys are built inside the scripts (one Redis, not a cluster).
# Due times are Redis's own clock (TIME), never a host's: hosts whose clocks disagree share the leases, and one
# running a minute ahead would otherwise take every lease the others hold as lapsed, and send their jobs again.
# The scripts get durations (a lease's, a postponement's) instead of times.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""
_ENQUEUE = _NOW + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], 'NX', now, ARGV[3])
return 1
"""
_CLAIM = _NOW + """
while true do
  local lanes = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
  if #lanes == 0 then return false end
  local user = lanes[1]
  local id = redis.call('LINDEX', ARGV[3] .. user, 0)
  if id then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), user)
    redis.call('HSET', KEYS[2], user, ARGV[2])
    return {user, id, redis.call('HGET', KEYS[3], id)}
  end
  redis.call('ZREM', KEYS[1], user)
end
"""
_RENEW = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
_SAVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
_POSTPONE = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
return 1
"""
_FINISH = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('LREM', KEYS[4], 1, ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[4]) > 0 then redis.call('ZADD', KEYS[1], now, ARGV[1])
else redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""


class RedisJobQueue:
    def __init__(self, url: str, prefix: str = "twilio-bridge:queue:"):
        self.redis = redis_client(url)
        self.prefix = prefix
        self.lanes, self.leases, self.jobs = prefix + "lanes", prefix + "leases", prefix + "jobs"
        self._scripts = {name: self.redis.register_script(source) for name, source in (
            ("enqueue", _ENQUEUE), ("claim", _CLAIM), ("renew", _RENEW), ("save", _SAVE),
            ("postpone", _POSTPONE), ("finish", _FINISH))}

    def _lane(self, user: str) -> str:
        return self.prefix + "lane:" + user

    def enqueue(self, job_id: str, user: str, data: dict[str, Any]) -> bool:
        keys = [self.prefix + "seen:" + job_id, self.jobs, self._lane(user), self.lanes]
        args = [job_id, json.dumps(data), user, int(SEEN_TTL * 1000)]
        return bool(self._scripts["enqueue"](keys=keys, args=args))

    def offer(self, job_id: str, user: str, admit: Callable[[], dict[str, Any] | None]) -> bool | None:
        """Not one step here: two copies of a message at the same moment may both be admitted (the user's rate
        count taken twice); the enqueue script still stores one, and the other is answered as a duplicate."""
        if self.seen(job_id):
            return False
        data = admit()
        return None if data is None else self.enqueue(job_id, user, data)

    def seen(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.prefix + "seen:" + job_id))

    def claim(self, lease: float) -> Job | None:
        token = secrets.token_hex(8)
        found = self._scripts["claim"](keys=[self.lanes, self.leases, self.jobs],
                                       args=[lease, token, self.prefix + "lane:"])
        if not found:
            return None
        user, job_id, data = (value.decode() for value in found)
        return Job(job_id, user, json.loads(data), token)

    def renew(self, job: Job, lease: float) -> bool:
        args = [job.user, job.token, lease]
        return bool(self._scripts["renew"](keys=[self.lanes, self.leases], args=args))

    def save(self, job: Job) -> bool:
        args = [job.user, job.token, job.id, json.dumps(job.data)]
        return bool(self._scripts["save"](keys=[self.leases, self.jobs], args=args))

    def postpone(self, job: Job, delay: float) -> bool:
        args = [job.user, job.token, job.id, json.dumps(job.data), delay]
        return bool(self._scripts["postpone"](keys=[self.lanes, self.leases, self.jobs], args=args))

    def finish(self, job: Job) -> bool:
        keys = [self.lanes, self.leases, self.jobs, self._lane(job.user)]
        return bool(self._scripts["finish"](keys=keys, args=[job.user, job.token, job.id]))

    def pending(self) -> int:
        return int(self.redis.hlen(self.jobs))


def open_queue(url: str) -> JobQueue:
    """The same STATE_URL as the state store: the queue lives beside the rest of the bridge's state."""
    kind, where = backend(url)
    return SqliteJobQueue(where) if kind == "sqlite" else RedisJobQueue(where)
