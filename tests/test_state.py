"""The state store's contract, the same for both backends: SQLite (one host) and Redis (several)."""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from twilio_bridge.state import RedisStore, SqliteStore, StateStore

from tests.servers import redis_url  # noqa: F401  (a fixture, shared with every module)


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
