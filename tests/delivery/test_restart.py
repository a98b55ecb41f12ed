"""Nothing lost: the bridge under real gunicorn, killed with SIGKILL while a message is in its care."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import requests

from tests.conftest import AUTH_TOKEN, HUMAN, WHATSAPP_FROM
from tests.servers import Gunicorn, free_port, wait_for
from twilio_bridge.delivery.workers import LEASE_SECONDS
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import ASK_DIGITS, GOODBYE, HANDOFF, RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser


@pytest.fixture
def bridge(tmp_path: Path, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> Gunicorn:
    port = free_port()
    env = {
        "RASA_WEBHOOK_URL": standin.webhook_url, "RASA_TIMEOUT": "3",
        "TWILIO_ACCOUNT_SID": fake_api.account_sid, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM, "TWILIO_API_BASE_URL": fake_api.base_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "FALLBACK_PHONE_NUMBER": HUMAN, "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "8",
    }
    server = Gunicorn(env, tmp_path, port)
    yield server.start()
    server.kill()


def test_messages_in_the_care_of_a_sigkilled_server_are_replied_to_once_after_the_restart(
        bridge: Gunicorn, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    midway = WhatsAppUser(bridge.url, AUTH_TOKEN, number="+5215500002222")
    standin.delay = 1.0
    midway.send("quiero un agente")
    wait_for(lambda: len(standin.received) == 1, seconds=5)  # a worker holds it, waiting for Rasa
    just_answered = WhatsAppUser(bridge.url, AUTH_TOKEN, number="+5215500001111")
    posted = just_answered.send("perdí mi tarjeta")
    wait_for(lambda: len(standin.received) == 2, seconds=5)  # its Rasa request too is under way, unanswered
    bridge.kill()
    assert posted.replies == []
    assert fake_api.messages == []

    standin.delay = 0.0
    bridge.start()
    handoff = f"{HANDOFF}\n\nPara hablar con una persona, llame al {HUMAN}."
    # the dead worker's leases ran out and another took the jobs over
    assert [m["body"] for m in fake_api.wait_for(1, to=midway.address, timeout=LEASE_SECONDS + 10)] == [handoff]
    sent = fake_api.wait_for(1, to=just_answered.address, timeout=5)
    assert [m["body"] for m in sent] == [ASK_DIGITS]
    just_answered.resend(posted)  # Twilio retrying the message the dead server had already answered
    just_answered.send("adiós")  # behind any duplicate in the lane: once its reply is out, nothing else comes
    assert [m["body"] for m in fake_api.wait_for(2, to=just_answered.address)][1:] == [GOODBYE]
    assert len(fake_api.sent_to(midway.address)) == 1 and len(fake_api.sent_to(just_answered.address)) == 2
    # Rasa's answer was cut off by the kill, never stored: asked exactly once more, by whoever took the job over
    assert [r["message"] for r in standin.received].count("perdí mi tarjeta") == 2

    assert sent[0]["status_callback"] == bridge.url + "/webhook/twilio/whatsapp/status"
    wait_for(lambda: len(fake_api.callbacks) >= 6, seconds=5)  # sent and delivered, for each of three messages
    assert sorted(c["status"] for c in fake_api.callbacks if c["sid"] == sent[0]["sid"]) == ["delivered", "sent"]
    assert {c["answer"] for c in fake_api.callbacks} == {204}
    wait_for(lambda: requests.get(bridge.url + "/health", timeout=5).json()["whatsapp"]["pending"] == 0)
    health = requests.get(bridge.url + "/health", timeout=5).json()["whatsapp"]
    assert health["counts"] == {"statuses": {"sent": 3, "delivered": 3}, "sent": 3, "send_errors": 0}


def test_a_stop_with_every_delivery_thread_busy_ends_within_gunicorns_grace_period(
        tmp_path: Path, standin: RasaStandIn, fake_api: FakeTwilioAPI) -> None:
    env = {
        "RASA_WEBHOOK_URL": standin.webhook_url, "RASA_TIMEOUT": "10", "RASA_MAX_WAIT_SECONDS": "1",  # grace: 6 s
        "TWILIO_ACCOUNT_SID": fake_api.account_sid, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM, "TWILIO_API_BASE_URL": fake_api.base_url,
        "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}", "WHATSAPP_WORKERS": "3",
        "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4",
    }
    server = Gunicorn(env, tmp_path).start()
    try:
        standin.delay = 12.0  # each delivery thread waits on Rasa longer than the whole grace period
        for n in range(3):
            WhatsAppUser(server.url, AUTH_TOKEN, number=f"+52155000033{n:02d}").send("hola")
        wait_for(lambda: len(standin.received) == 3)
        server.kill(signal.SIGTERM)  # returns once the master has exited
    finally:
        server.kill()
    log = server.log_path.read_text()
    stopped = [json.loads(line) for line in log.splitlines() if '"delivery.stopped"' in line]
    assert [line["unfinished"] for line in stopped] == [3]  # the jobs in hand stay queued for another process
    assert "SIGKILL" not in log  # the worker stopped its threads in time; the master did not have to kill it
