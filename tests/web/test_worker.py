"""The bridge's gunicorn worker (twilio_bridge/web/worker.py), under the shipped gunicorn.conf.py: a thread that
answered on a kept-alive connection serves its next request itself, and lets the connection go after the wait."""
from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from gunicorn.workers import gthread

from tests.conftest import AUTH_TOKEN, HUMAN
from tests.servers import Gunicorn, gunicorn_setting, wait_for
from twilio_bridge.web.worker import NEXT_REQUEST_WAIT, ThreadWorker


@contextmanager
def serving_threads(workdir: Path, worker: str, threads: int = 4) -> Iterator[Gunicorn]:
    """tests/web/threads_app.py in one worker of `threads` threads, under gunicorn.conf.py but for the worker class."""
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": "http://127.0.0.1:9/webhooks/rest/webhook",
           "FALLBACK_PHONE_NUMBER": HUMAN, "STATE_URL": f"sqlite:///{workdir}/state.db",
           "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": str(threads)}
    server = Gunicorn(env, workdir, args=["-k", worker])
    server.command[-1] = "tests.web.threads_app:app"
    with server:
        yield server


def thread_of(session: requests.Session, server: Gunicorn) -> str:
    answer = session.get(server.url + "/thread", timeout=5)
    answer.raise_for_status()
    return answer.text


def test_the_shipped_configuration_runs_this_worker(tmp_path: Path) -> None:
    assert ThreadWorker.next_request_wait == NEXT_REQUEST_WAIT == 0.02
    assert gunicorn_setting("worker_class", tmp_path) == "twilio_bridge.web.worker.ThreadWorker"


def test_the_thread_that_answered_serves_the_connection_s_next_request(tmp_path: Path) -> None:
    with serving_threads(tmp_path, "tests.web.threads_app.PatientWorker") as server, \
            requests.Session() as kept, requests.Session() as other:
        first = thread_of(kept, server)
        # gthread's pool would give the only thread it has, idle since the first answer, to another
        # connection; here that thread still waits on the first one, so the other gets a new thread.
        assert thread_of(other, server) != first
        assert thread_of(kept, server) == first
        assert thread_of(kept, server) == first


def test_a_connection_quiet_past_the_wait_goes_back_to_the_poller(tmp_path: Path) -> None:
    with serving_threads(tmp_path, "twilio_bridge.web.worker.ThreadWorker") as server, requests.Session() as kept:
        first = thread_of(kept, server)
        port = kept.get(server.url + "/peer", timeout=5).text  # the client's end of the kept connection

        def freed() -> bool:  # new connections, one request each, until the first connection's thread serves one
            with requests.Session() as once:
                return thread_of(once, server) == first

        wait_for(freed, 10, server.process, server.log_path)
        assert kept.get(server.url + "/peer", timeout=5).text == port  # the same connection, back in the poller
        assert thread_of(kept, server)  # and still served


def test_a_request_waiting_for_a_thread_gets_the_next_one_free(tmp_path: Path) -> None:
    """One thread and a client that sends its next request as soon as it has an answer: with no thread to
    spare, the thread does not keep that client's connection, so another connection's request is served
    between two of the client's, not once the client stops."""
    with serving_threads(tmp_path, "tests.web.threads_app.PatientWorker", threads=1) as server, \
            requests.Session() as busy:
        thread_of(busy, server)
        answered = threading.Event()

        def other_connection() -> None:
            with requests.Session() as other:
                thread_of(other, server)
                answered.set()

        waiting = threading.Thread(target=other_connection, daemon=True)
        waiting.start()
        for _ in range(500):  # each answer is a chance for the thread to see the other request waiting
            thread_of(busy, server)
            if answered.is_set():
                break
        assert answered.wait(5), "another connection's request waited while the thread served a busy one"
        waiting.join(5)


def test_a_thread_that_finds_the_pool_full_after_its_wait_gives_the_connection_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The next request came, but while this thread waited for it every other thread was taken: a request on
    another connection may be queued, so this connection goes back to the poller (its request queues behind
    that one) instead of being served first. Only handle()'s own logic, with gthread's part stood in for."""
    worker = ThreadWorker.__new__(ThreadWorker)  # no process: init_process's fields set here
    worker.cfg, worker.alive, worker._serving, worker._counting = SimpleNamespace(threads=2), True, 0, threading.Lock()
    near, far = socket.socketpair()
    conn = SimpleNamespace(sock=near, parser=SimpleNamespace(unreader=SimpleNamespace(buf=io.BytesIO())))
    served = []
    monkeypatch.setattr(gthread.ThreadWorker, "handle", lambda self, conn: served.append(conn) or True)
    waited, looked = ThreadWorker._next_request_comes, []

    def pool_filled_meanwhile(self: ThreadWorker, conn: object) -> bool:
        comes = waited(self, conn)
        looked.append(comes)
        self._serving += 1  # another connection's request took the other thread during the wait
        return comes

    monkeypatch.setattr(ThreadWorker, "_next_request_comes", pool_filled_meanwhile)
    with near, far:
        far.sendall(b"GET /thread HTTP/1.1\r\nHost: bridge\r\n\r\n")  # the connection's next request, already here
        assert worker.handle(conn) is True  # kept: back to the poller
    assert looked == [True]  # the request had come: only the pool's state sent the connection back
    assert len(served) == 1
