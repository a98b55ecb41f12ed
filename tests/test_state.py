"""The state store's contract, the same for both backends: SQLite (one host) and Redis (several)."""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from twilio_bridge import state
from twilio_bridge.state import RedisStore, SqliteStore, StateStore

from tests.servers import redis_url, wait_for  # noqa: F401  (redis_url: a fixture, shared with every module)


@pytest.fixture(params=["sqlite", "redis"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StateStore]:
    """Opens the store as another worker would: a new connection to the same state."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "s.db")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url)


def test_put_add_incr_delete_and_expiry(reopen: Callable[[], StateStore]) -> None:
    store = reopen()
    key = f"t{secrets.token_hex(4)}:".__add__
    assert store.ping()
    store.put(key("a"), {"n": 1}, ttl=60)
    assert store.get(key("a")) == {"n": 1} and not store.add(key("a"), {"n": 2}, ttl=60)
    assert store.add(key("b"), {"n": 3}, ttl=0.05)
    time.sleep(0.1)
    assert store.get(key("b")) is None and store.add(key("b"), {"n": 4}, ttl=60) and store.get(key("b")) == {"n": 4}
    assert [store.incr(key("c"), ttl=0.1) for _ in range(3)] == [1, 2, 3]
    time.sleep(0.15)
    assert store.incr(key("c"), ttl=60) == 1
    store.delete(key("a"))
    assert store.get(key("a")) is None
    assert reopen().get(key("b")) == {"n": 4}  # another worker sees the same state


def test_put_many_stores_every_entry_however_many_and_none_is_nothing(reopen: Callable[[], StateStore]) -> None:
    store = reopen()
    prefix = f"many{secrets.token_hex(4)}:"
    entries = [(f"{prefix}{n}", {"n": n}, 60.0) for n in range(SqliteStore.ROWS_PER_STATEMENT * 3 + 1)]
    store.put_many(entries + [(f"{prefix}0", {"n": "last"}, 60.0)])  # a key given twice: the last one stands
    store.put_many([])
    assert [store.get(key) for key, _, _ in entries[1:]] == [value for _, value, _ in entries[1:]]
    assert store.get(f"{prefix}0") == {"n": "last"}


def test_on_sqlite_a_written_statement_counts_the_rows_it_returned(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.put("first", {}, 60)  # a fresh store's first write also purges
    assert store.file.execute("INSERT INTO kv VALUES ('a', '{}', 1e12), ('b', '{}', 1e12) RETURNING key") == (
        2, [("a",), ("b",)])


def test_on_sqlite_no_write_checkpoints_the_file_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's automatic checkpoint (an fsync inside the commit past 1000 pages) made one webhook in a hundred slow."""
    monkeypatch.setattr(state.SqliteFile, "wrote", lambda self: None)  # no checkpoint thread
    store = SqliteStore(tmp_path / "s.db")
    last = ""
    for n in range(1500):  # past 1000 pages of WAL, where SQLite would have checkpointed on its own
        last = f"key-{n}-{secrets.token_hex(4)}"
        store.put(last, {"padding": "x" * 3000}, 60)
    assert last.encode() not in (tmp_path / "s.db").read_bytes()
    assert last.encode() in (tmp_path / "s.db-wal").read_bytes() and store.get(last) == {"padding": "x" * 3000}


def test_on_sqlite_the_checkpoint_thread_copies_writes_into_the_database_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    key = f"checkpointed-{secrets.token_hex(8)}"
    store.put(key, {"n": 1}, 60)
    wait_for(lambda: key.encode() in (tmp_path / "s.db").read_bytes(), seconds=5)
    assert any(t.name == "checkpoint-s.db" for t in threading.enumerate())


def test_put_many_stores_all_or_none(reopen: Callable[[], StateStore]) -> None:
    store = reopen()
    key = f"t{secrets.token_hex(4)}:".__add__
    store.put_many([(key("a"), {"n": 1}, 60), (key("b"), {"n": 2}, 60)])
    assert reopen().get(key("a")) == {"n": 1} and reopen().get(key("b")) == {"n": 2}
    with pytest.raises(TypeError):
        store.put_many([(key("a"), {"n": 3}, 60), (key("c"), {"n": object()}, 60)])
    assert store.get(key("a")) == {"n": 1} and store.get(key("c")) is None
