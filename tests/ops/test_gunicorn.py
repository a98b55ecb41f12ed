"""The shipped gunicorn.conf.py, for real: two workers, held turns across them, metrics, logs, reload."""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AUTH_TOKEN, HUMAN
from tests.servers import Gunicorn, redis_server, wait_for
from twilio_bridge.testing.phone import PhoneCall, TwilioPhone
from twilio_bridge.testing.standin import ASK_DIGITS, RasaStandIn

HOLD = "Un momento, por favor."


class LoggedGunicorn(Gunicorn):
    """The shipped configuration, read through its JSON log lines."""

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
        return alive

    def wait_until(self, ready: Callable[[], object], seconds: float = 20) -> None:
        wait_for(ready, seconds, self.process, self.log_path)


@pytest.fixture
def rasa() -> Iterator[RasaStandIn]:
    with RasaStandIn().start() as server:
        yield server


def settings_env(rasa: RasaStandIn, state_url: str) -> dict[str, str]:
    """Holding after 0.3 s and giving up after 6 s."""
    return {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": rasa.webhook_url, "FALLBACK_PHONE_NUMBER": HUMAN,
            "STATE_URL": state_url, "GUNICORN_THREADS": "20", "VOICE_HOLD_SECONDS": "0.3", "RASA_TIMEOUT": "1.5",
            "RASA_MAX_WAIT_SECONDS": "6"}


@contextmanager
def two_workers(rasa: RasaStandIn, workdir: Path, state_url: str) -> Iterator[LoggedGunicorn]:
    with LoggedGunicorn({**settings_env(rasa, state_url), "GUNICORN_WORKERS": "2"}, workdir) as server:
        server.wait_until(lambda: len(server.worker_pids()) == 2)  # both booted
        yield server


@pytest.fixture
def server(rasa: RasaStandIn, tmp_path: Path) -> Iterator[LoggedGunicorn]:
    with two_workers(rasa, tmp_path, f"sqlite:///{tmp_path / 'state.db'}") as running:
        yield running


def unpooled() -> requests.Session:
    """A connection per webhook, as Twilio's come through a load balancer: any worker may take the next."""
    session = requests.Session()
    session.headers["Connection"] = "close"
    return session


def webhook_lines(server: LoggedGunicorn, call: PhoneCall) -> list[dict]:
    return [line for line in server.lines() if line.get("event") == "webhook" and line.get("call_sid") == call.sid]


def test_held_turns_are_answered_whichever_worker_gets_the_poll(server: LoggedGunicorn, rasa: RasaStandIn) -> None:
    place_held_calls(server, rasa)


def test_held_turns_cross_workers_through_redis(rasa: RasaStandIn, tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis_url, two_workers(rasa, tmp_path, redis_url) as running:
        place_held_calls(running, rasa)


def place_held_calls(server: LoggedGunicorn, rasa: RasaStandIn, rounds: int = 5) -> None:
    """Rounds of eight held calls, each answered after its hold, until one call's poll has reached a worker
    other than the one that held its turn: which worker accepts a connection is the kernel's choice, and on
    a loaded machine one round's polls have all gone to the holding worker."""
    for _ in range(rounds):
        rasa.delay = 0  # each call's greeting at once; its first turn held
        calls = [TwilioPhone(server.url, AUTH_TOKEN, session=unpooled()).call() for _ in range(8)]
        rasa.delay = 1.2
        threads = [threading.Thread(target=call.say, args=("perdí mi tarjeta",)) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for call in calls:
            assert call.heard[0] == HOLD and call.heard[-1] == ASK_DIGITS and call.state == "gathering"
        if any(held_on_one_worker_answered_on_another(server, call) for call in calls):
            return
    pytest.fail(f"in {rounds} rounds every poll landed on the worker that held its turn; the shared store went untested")


def held_on_one_worker_answered_on_another(server: LoggedGunicorn, call: PhoneCall) -> bool:
    lines = webhook_lines(server, call)
    held = next(line["pid"] for line in lines if line["route"] == "/webhook/twilio/speech")
    answered = next(line["pid"] for line in lines if line["route"] == "/webhook/twilio/poll" and line["outcome"] == "gather")
    return held != answered


def test_metrics_add_up_every_worker(server: LoggedGunicorn, rasa: RasaStandIn) -> None:
    """Rounds of twelve calls until both workers have served some (the kernel picks who accepts), then the
    sum across workers counts every call."""
    rasa.delay = 0.1  # calls overlap, on connections of their own, so both workers serve some

    def place() -> None:
        TwilioPhone(server.url, AUTH_TOKEN, session=unpooled()).call().say("hola")

    placed = 0
    for _ in range(5):
        threads = [threading.Thread(target=place) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        placed += 12
        if len({line["pid"] for line in server.lines() if line.get("event") == "webhook"}) == 2:
            break
    else:
        pytest.fail("in five rounds one worker served everything; the sum across workers went untested")
    text = requests.get(server.url + "/metrics", timeout=5).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("twilio_bridge_webhooks_total", (("outcome", "gather"), ("route", "/webhook/twilio/voice")))] == placed
    assert samples[("twilio_bridge_rasa_seconds_count", (("result", "ok"),))] == 2 * placed


def test_gunicorn_and_the_app_log_json_lines_with_the_worker_pid(server: LoggedGunicorn) -> None:
    TwilioPhone(server.url, AUTH_TOKEN).call()
    lines = server.lines()  # each line parsed as JSON, gunicorn's own included
    assert any(line.get("logger") == "gunicorn.error" and "Listening at" in line["event"] for line in lines)
    assert all("pid" in line and "level" in line for line in lines)
    assert all(datetime.fromisoformat(line["timestamp"]) for line in lines)  # not masked like a phone number
    assert any(line["event"] == "webhook" for line in lines)


def test_the_master_says_once_what_it_serves(server: LoggedGunicorn, rasa: RasaStandIn, tmp_path: Path) -> None:
    banners = [line for line in server.lines() if line["event"] == "bridge.starting"]
    assert len(banners) == 1 and banners[0]["pid"] == server.process.pid  # the master's, not one per worker
    banner = banners[0]
    assert banner["settings"].startswith(f"no twilio.env in {tmp_path}: settings come from the environment only")
    assert banner["rasa"] == f"{rasa.webhook_url}: answers 'Hello from Rasa: 3.21.0'"
    assert banner["voice"].startswith("gather") and banner["whatsapp"].startswith("TwiML replies")
    assert banner["webhooks"].split() == [server.url + path for path in (
        "/webhook/twilio/voice", "/webhook/twilio/fallback", "/webhook/twilio/status", "/webhook/twilio/whatsapp",
        "/webhook/twilio/whatsapp/status")]


def test_a_reload_keeps_a_held_call(server: LoggedGunicorn, rasa: RasaStandIn) -> None:
    call = TwilioPhone(server.url, AUTH_TOKEN).call()
    old_workers = server.worker_pids()
    rasa.delay = 2.5
    speaking = threading.Thread(target=call.say, args=("perdí mi tarjeta",))
    speaking.start()
    server.wait_until(lambda: HOLD in call.heard)  # the turn is held now, its Rasa request running in an old worker
    server.process.send_signal(signal.SIGHUP)
    speaking.join(timeout=30)
    assert call.heard[0] == HOLD and call.heard[-1] == ASK_DIGITS
    server.wait_until(lambda: server.worker_pids() and not server.worker_pids() & old_workers)  # reloaded


def test_a_reload_reads_twilio_env_again_under_the_environment(rasa: RasaStandIn, tmp_path: Path) -> None:
    (tmp_path / "twilio.env").write_text("RASA_TIMEOUT=5\nVOICE_HOLD_SECONDS=3\n")
    env = {**settings_env(rasa, f"sqlite:///{tmp_path / 'state.db'}"), "VOICE_HOLD_SECONDS": "2", "GUNICORN_WORKERS": "1"}
    del env["RASA_TIMEOUT"]
    with Gunicorn(env, tmp_path) as server:
        def config() -> dict:
            return requests.get(server.url + "/health", timeout=5).json()["config"]

        assert (config()["rasa_timeout"], config()["voice_hold_seconds"]) == (5.0, 2.0)
        (tmp_path / "twilio.env").write_text("RASA_TIMEOUT=6\nVOICE_HOLD_SECONDS=3\n")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while config()["rasa_timeout"] != 6.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (config()["rasa_timeout"], config()["voice_hold_seconds"]) == (6.0, 2.0)  # the environment still wins
