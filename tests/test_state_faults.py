"""The SQLite store recovers from faults of its file without a restart, and holds few file descriptors."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH_TOKEN, LiveServer
from twilio_bridge.app import create_app
from twilio_bridge.state import SqliteFile, SqliteStore
from twilio_bridge.testing.phone import TwilioPhone

APOLOGY = "Lo siento, tengo un problema técnico."


def test_a_deleted_state_file_comes_back_with_its_table(settings, tmp_path: Path) -> None:
    server = LiveServer(create_app(settings))
    try:
        phone = TwilioPhone(server.url, AUTH_TOKEN)
        assert phone.call().state == "gathering"
        database = Path(settings.state_url.removeprefix("sqlite:///"))
        for path in database.parent.glob(database.name + "*"):
            if not path.name.endswith(".lock"):
                path.unlink()
        call = phone.call()
        assert call.state == "gathering" and APOLOGY not in call.heard  # not "no such table: kv"
        call.say("perdí mi tarjeta")
        assert call.state == "gathering" and database.exists()
    finally:
        server.stop()


def immutable(path: Path, on: bool) -> bool:
    result = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return result.returncode == 0


def test_a_connection_opened_while_the_file_was_read_only_is_not_kept(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    store = SqliteStore(database)
    worker = ThreadPoolExecutor(1)  # one long-lived thread, as a gunicorn thread or a holding waiter
    try:
        if not immutable(database, True):
            pytest.skip("chattr +i is not available here (needs root and a filesystem that supports it)")
        try:
            worker.submit(store.put, "during", {"n": 1}, 60).exception()  # may fail: the fault
        finally:
            immutable(database, False)
        assert worker.submit(store.put, "after", {"n": 2}, 60).exception() is None
        assert worker.submit(store.get, "after").result() == {"n": 2}
    finally:
        worker.shutdown()


def test_connections_are_bounded_whatever_the_number_of_threads(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    start = threading.Barrier(64)

    def work(n: int) -> None:
        start.wait()
        for i in range(20):
            store.put(f"k{n}:{i}", {"n": i}, 60)
            assert store.get(f"k{n}:{i}") == {"n": i}

    threads = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(descriptors_on(tmp_path / "state.db")) <= 3 * SqliteFile.POOL_SIZE + 1  # file, WAL, shm; lock


def descriptors_on(path: Path) -> list[str]:
    """This process's open files whose name starts with `path` (the database, its -wal, -shm and .lock)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used, closed by now
        if target.startswith(str(path)):
            found.append(target)
    return found


def open_at_once(path: Path, start: Any, errors: Any) -> None:
    start.wait()
    try:
        SqliteStore(path).put("opened", {"pid": os.getpid()}, 60)
    except Exception as exc:  # noqa: BLE001 (reported to the test)
        errors.put(repr(exc))


def test_workers_opening_a_new_state_file_at_once_all_open_it(tmp_path: Path) -> None:
    """gunicorn's workers start together on a file that does not exist yet: turning it to WAL at the same
    moment made SQLite answer "database is locked" at once to some of them (a worker that failed to boot)."""
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_ in range(40):
        start = context.Barrier(6)
        workers = [context.Process(target=open_at_once, args=(tmp_path / f"{round_}.db", start, errors))
                   for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [worker.exitcode for worker in workers] == [0] * 6
    assert errors.empty(), errors.get()
