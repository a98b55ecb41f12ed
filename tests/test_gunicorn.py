"""The shipped gunicorn.conf.py, for real: two workers, held turns across them, metrics, logs, reload."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from twilio_bridge.phone import Call, TwilioPhone
from twilio_bridge.standin import ASK_DIGITS, RasaStandIn

from .conftest import AUTH_TOKEN, HUMAN

REPO = Path(__file__).resolve().parent.parent
HOLD = "Un momento, por favor."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py twilio_voice_server:app` in a temporary working directory."""

    def __init__(self, workdir: Path, rasa: RasaStandIn, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "gunicorn.log"
        environ = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        environ.update(
            PYTHONPATH=str(REPO), HOST="127.0.0.1", PORT=str(self.port), TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            RASA_WEBHOOK_URL=rasa.webhook_url, FALLBACK_PHONE_NUMBER=HUMAN, GUNICORN_WORKERS="2",
            GUNICORN_THREADS="20", STATE_URL=f"sqlite:///{workdir / 'state.db'}",
            VOICE_HOLD_SECONDS="0.3", RASA_TIMEOUT="1.5", RASA_MAX_WAIT_SECONDS="6", **env,
        )
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "twilio_voice_server:app"],
                cwd=workdir, env=environ, stdout=log, stderr=subprocess.STDOUT,
            )
        self.wait_until(lambda: len(self.worker_pids()) == 2, "two workers booted")

    def wait_until(self, ready, what: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                if ready():
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn: not {what} within {seconds}s: {self.log_path.read_text()[-2000:]}")

    def lines(self) -> list[dict]:
        complete = self.log_path.read_text().split("\n")[:-1]  # the last may be half written
        return [json.loads(line) for line in complete if line.strip()]

    def worker_pids(self) -> set[int]:
        alive = set()
        for line in self.lines():
            if line["event"].startswith("Booting worker with pid"):
                alive.add(line["pid"])
            if line["event"].startswith("Worker exiting"):
                alive.discard(line["pid"])
        return alive if requests.get(self.url + "/health", timeout=2).status_code == 200 else set()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture
def rasa() -> Iterator[RasaStandIn]:
    with RasaStandIn().start() as server:
        yield server


@pytest.fixture
def gunicorn(tmp_path: Path, rasa: RasaStandIn) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path, rasa)
    yield server
    server.stop()


def unpooled() -> requests.Session:
    """A connection per webhook, as Twilio's come through a load balancer: any worker may take the next."""
    session = requests.Session()
    session.headers["Connection"] = "close"
    return session


def webhook_lines(server: Gunicorn, call: Call) -> list[dict]:
    return [line for line in server.lines() if line.get("event") == "webhook" and line.get("call_sid") == call.sid]


def test_held_turns_are_answered_whichever_worker_gets_the_poll(gunicorn: Gunicorn, rasa: RasaStandIn) -> None:
    calls = [TwilioPhone(gunicorn.url, AUTH_TOKEN, session=unpooled()).call() for _ in range(8)]
    rasa.delay = 1.2
    threads = [threading.Thread(target=call.say, args=("perdí mi tarjeta",)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for call in calls:
        assert call.heard[0] == HOLD and call.heard[-1] == ASK_DIGITS and call.state == "gathering"
    crossed = 0
    for call in calls:
        lines = webhook_lines(gunicorn, call)
        held = next(line["pid"] for line in lines if line["route"] == "/webhook/twilio/speech")
        answered = next(line["pid"] for line in lines if line["route"] == "/webhook/twilio/poll"
                        and line["outcome"] == "gather")
        crossed += held != answered
    assert crossed, "every poll landed on the worker that held its turn; the shared store went untested"


def test_metrics_add_up_every_worker(gunicorn: Gunicorn, rasa: RasaStandIn) -> None:
    rasa.delay = 0.1  # calls overlap, on connections of their own, so both workers serve some

    def place() -> None:
        TwilioPhone(gunicorn.url, AUTH_TOKEN, session=unpooled()).call().say("hola")

    threads = [threading.Thread(target=place) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    text = requests.get(gunicorn.url + "/metrics", timeout=5).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("twilio_bridge_webhooks_total", (("outcome", "gather"), ("route", "/webhook/twilio/voice")))] == 12
    assert samples[("twilio_bridge_rasa_seconds_count", (("result", "ok"),))] == 24
    served_by = {line["pid"] for line in gunicorn.lines() if line.get("event") == "webhook"}
    assert len(served_by) == 2, "one worker served everything; the sum across workers went untested"


def test_gunicorn_and_the_app_log_json_lines_with_the_worker_pid(gunicorn: Gunicorn) -> None:
    TwilioPhone(gunicorn.url, AUTH_TOKEN).call()
    lines = gunicorn.lines()  # each line parsed as JSON, gunicorn's own included
    assert any(line.get("logger") == "gunicorn.error" and "Listening at" in line["event"] for line in lines)
    assert all("pid" in line and "level" in line for line in lines)
    assert all(datetime.fromisoformat(line["timestamp"]) for line in lines)  # not masked like a phone number
    assert any(line["event"] == "webhook" for line in lines)


def test_a_reload_keeps_a_held_call(gunicorn: Gunicorn, rasa: RasaStandIn) -> None:
    call = TwilioPhone(gunicorn.url, AUTH_TOKEN).call()
    old_workers = gunicorn.worker_pids()
    rasa.delay = 2.5
    speaking = threading.Thread(target=call.say, args=("perdí mi tarjeta",))
    speaking.start()
    time.sleep(0.8)  # the turn is held now, its Rasa request running in an old worker
    gunicorn.process.send_signal(signal.SIGHUP)
    speaking.join(timeout=30)
    assert call.heard[0] == HOLD and call.heard[-1] == ASK_DIGITS
    gunicorn.wait_until(lambda: gunicorn.worker_pids() and not gunicorn.worker_pids() & old_workers, "reloaded")
