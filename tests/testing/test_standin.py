"""The Rasa REST stand-in, exercised over real HTTP as the bridge will use it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.servers import wait_for
from twilio_bridge.testing.standin import ECHO, GREETING, HUGE_TEXT, NASTY_TEXT, RasaStandIn

BUTTONS = [{"title": "Sí", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]


@pytest.fixture
def standin() -> Iterator[RasaStandIn]:
    with RasaStandIn() as running:
        yield running


def say(standin: RasaStandIn, message: str, sender: str | None = "CA123", **extra: Any) -> Any:
    body = {"message": message, **extra} if sender is None else {"sender": sender, "message": message, **extra}
    response = requests.post(standin.webhook_url, json=body, timeout=5)
    assert response.status_code == 200
    return response.json()


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [item["text"] for item in items if "text" in item]


def test_root_answers_like_rasa(standin: RasaStandIn) -> None:
    response = requests.get(standin.origin + "/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "Hello from Rasa: 3.21.0"
    assert standin.webhook_url == standin.origin + "/webhooks/rest/webhook"


def test_whole_scripted_call(standin: RasaStandIn) -> None:
    assert say(standin, "/session_start") == [
        {"recipient_id": "CA123", "text": "Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"}
    ]
    assert say(standin, "Me robaron la tarjeta") == [
        {
            "recipient_id": "CA123",
            "text": "Entiendo. Para bloquear su tarjeta, marque o diga los últimos cuatro dígitos.",
        },
        {"recipient_id": "CA123", "custom": {"gather": {"input": "dtmf speech", "num_digits": 4, "timeout": 6}}},
    ]
    assert say(standin, "1234") == [
        {"recipient_id": "CA123", "text": "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?", "buttons": BUTTONS}
    ]
    assert texts(say(standin, "Sí")) == [
        "Listo. Su tarjeta está bloqueada. Su número de referencia es 4 8 2 1.",
        "¿Algo más?",
    ]
    assert say(standin, "No, gracias") == [
        {"recipient_id": "CA123", "text": "Gracias por llamar. Hasta luego."},
        {"recipient_id": "CA123", "custom": {"hangup": True}},
    ]


@pytest.mark.parametrize("digits", ["1234", "1 2 3 4", "uno dos tres cuatro", "Uno, dos, tres, cuatro."])
def test_digits_typed_or_spoken(standin: RasaStandIn, digits: str) -> None:
    say(standin, "perdí mi tarjeta")
    assert texts(say(standin, digits)) == ["La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"]


def test_digits_count_only_while_asked_for(standin: RasaStandIn) -> None:
    assert texts(say(standin, "1234")) == ["Perdone, no le entendí. Puedo bloquear una tarjeta perdida o robada."]


def test_button_payloads_confirm_or_cancel(standin: RasaStandIn) -> None:
    for answer, expected in [("/affirm", "¿Algo más?"), ("/deny", "De acuerdo, no la bloqueo. ¿Algo más?")]:
        say(standin, "quiero bloquear mi tarjeta")
        say(standin, "9 8 7 6")
        assert texts(say(standin, answer))[-1] == expected
    assert say(standin, "/deny")[-1] == {"recipient_id": "CA123", "custom": {"hangup": True}}


@pytest.mark.parametrize("word", ["agente", "Quiero hablar con una persona", "un humano", "asesor"])
def test_handoff(standin: RasaStandIn, word: str) -> None:
    assert say(standin, word) == [
        {"recipient_id": "CA123", "text": "Le comunico con un asesor."},
        {"recipient_id": "CA123", "custom": {"handoff": True}},
    ]


def test_image_follows_text(standin: RasaStandIn) -> None:
    items = say(standin, "mándeme la imagen")
    assert "text" in items[0]
    assert items[1] == {"recipient_id": "CA123", "image": "https://example.com/card.png"}


def test_goodbye_and_fallback(standin: RasaStandIn) -> None:
    assert say(standin, "Adiós")[-1]["custom"] == {"hangup": True}
    assert texts(say(standin, "¿Qué hora es? problema")) == [
        "Perdone, no le entendí. Puedo bloquear una tarjeta perdida o robada."
    ]


@pytest.mark.parametrize("command", ["/restart", "/SetSlots(x=1)", '/affirm{"x": 1}', "  /restart"])
def test_unknown_slash_text_is_executed_as_a_command(standin: RasaStandIn, command: str) -> None:
    assert texts(say(standin, command)) == ["COMMAND EXECUTED"]
    assert standin.received[-1]["message"] == command


def test_text_with_blank_lines_becomes_several_items(standin: RasaStandIn) -> None:
    say(standin, "se me extravió la tarjeta")
    say(standin, "4321")
    items = say(standin, "si")
    assert len(items) == 2
    assert all("\n" not in item["text"] for item in items)


def test_missing_sender_is_default(standin: RasaStandIn) -> None:
    assert say(standin, "/session_start", sender=None)[0]["recipient_id"] == "default"
    assert standin.received[-1]["sender"] == "default"


def test_session_end_is_final(standin: RasaStandIn) -> None:
    say(standin, "/session_start")
    assert say(standin, "/session_end") == []
    assert say(standin, "/session_start") == []
    assert say(standin, "perdí mi tarjeta") == []
    assert texts(say(standin, "/session_start", sender="CA999")) != []


def test_requests_are_recorded(standin: RasaStandIn) -> None:
    before = time.time()
    say(standin, "hola", metadata={"channel": "voice", "call_sid": "CA123"})
    [record] = standin.received
    assert record["sender"] == "CA123"
    assert record["message"] == "hola"
    assert record["metadata"] == {"channel": "voice", "call_sid": "CA123"}
    assert before <= record["at"] <= time.time()


def test_clear_resets_records_and_conversations(standin: RasaStandIn) -> None:
    say(standin, "/session_end")
    standin.clear()
    assert standin.received == []
    assert texts(say(standin, "/session_start")) != []


def test_body_that_is_not_json_is_rejected(standin: RasaStandIn) -> None:
    response = requests.post(standin.webhook_url, data="hola", timeout=5)
    assert response.status_code == 400


def answered_at(standin: RasaStandIn, senders: list[str]) -> list[float]:
    """Each sender's `/session_start` at once, one thread each; when each answer came back."""
    def ask(sender: str) -> float:
        assert say(standin, "/session_start", sender=sender)[0]["recipient_id"] == sender
        return time.time()

    with ThreadPoolExecutor(len(senders)) as pool:
        return list(pool.map(ask, senders))


def test_one_sender_is_served_one_message_at_a_time(standin: RasaStandIn) -> None:
    standin.delay = 0.3
    first, second = sorted(answered_at(standin, ["CA1", "CA1"]))
    assert second - first >= 0.25  # the second waited for (about) the first's whole delay: a lower bound


@pytest.mark.parametrize("senders", [2, 300])
def test_different_senders_are_served_concurrently(senders: int) -> None:
    standin = RasaStandIn(mode="hang").start()  # its own: stopping it is what ends the hang
    standin.hang_seconds = 300.0
    try:
        with ThreadPoolExecutor(senders) as pool:
            answers = pool.map(lambda n: requests.post(standin.webhook_url, json={"sender": f"CA{n}", "message": "/session_start"},
                                                       timeout=120).json(), range(senders))
            wait_for(lambda: len(standin.received) == senders, seconds=60)  # all in at once, none answered yet
            standin.stop()
            assert [answer[0]["recipient_id"] for answer in answers] == [f"CA{n}" for n in range(senders)]
    finally:
        standin.stop()


def test_a_standin_for_benchmarks_keeps_nothing_per_message() -> None:
    """The command line's stand-in records nothing, and a sender's lock goes once its messages are answered:
    a benchmark's hundred thousand senders left no garbage for the collector to walk (pauses of tens of ms)."""
    with RasaStandIn(record=False) as standin:
        standin.delay = 0.2
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: requests.post(standin.webhook_url, json={"sender": f"CA{n % 3}", "message": "hola"},
                                                            timeout=30).json(), range(8)))
        assert all(answer[0]["text"] for answer in answers)
        assert standin.received == [] and standin._sender_locks == {}


@pytest.mark.parametrize(
    ("mode", "status", "content_type", "body"),
    [
        ("error500", 500, "text/html", None),
        ("html", 200, "text/html", None),
        ("invalid_json", 200, "application/json", '[{"text": "unterminated'),
        ("empty", 200, "application/json", "[]"),
    ],
)
def test_failure_modes(standin: RasaStandIn, mode: str, status: int, content_type: str, body: str | None) -> None:
    standin.mode = mode
    response = requests.post(standin.webhook_url, json={"sender": "CA1", "message": "hola"}, timeout=5)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type)
    if body is None:
        assert response.text.startswith("<html>") and response.text.endswith("</html>")
    else:
        assert response.text == body
    if mode == "invalid_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
    assert len(standin.received) == 1


def test_huge_mode(standin: RasaStandIn) -> None:
    standin.mode = "huge"
    [item] = say(standin, "hola")
    assert item["text"] == HUGE_TEXT
    assert len(HUGE_TEXT) == 100_000 and "\n\n" not in HUGE_TEXT and "tarjeta" in HUGE_TEXT


def test_nasty_mode(standin: RasaStandIn) -> None:
    standin.mode = "nasty"
    [item] = say(standin, "hola")
    assert item["text"] == NASTY_TEXT
    assert "\x00" in item["text"] and "🚀" in item["text"] and "<b>" in item["text"]


def test_drop_mode_closes_without_an_answer(standin: RasaStandIn) -> None:
    standin.mode = "drop"
    with pytest.raises(requests.ConnectionError):
        requests.post(standin.webhook_url, json={"sender": "CA1", "message": "hola"}, timeout=5)
    standin.mode = "ok"
    assert texts(say(standin, "/session_start", sender="CA1")) != []


def test_hang_mode_holds_the_client_past_its_timeout(standin: RasaStandIn) -> None:
    standin.mode, standin.hang_seconds = "hang", 0.5
    with pytest.raises(requests.Timeout):
        requests.post(standin.webhook_url, json={"sender": "CA1", "message": "hola"}, timeout=0.2)
    assert texts(say(standin, "/session_start", sender="CA2")) != []


def test_stop_during_hang_answers_at_once() -> None:
    standin = RasaStandIn(mode="hang").start()
    standin.hang_seconds = 300.0
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(say(standin, "/session_start")))
    caller.start()
    wait_for(lambda: standin.received)
    standin.stop()
    caller.join(timeout=30)  # a hang left to run its 300 s would leave no answer here
    assert texts(answers[0]) == ["Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"]


def test_control_endpoint(standin: RasaStandIn) -> None:
    control = standin.origin + "/_standin/control"
    response = requests.post(control, json={"mode": "empty", "delay": 0.2}, timeout=5)
    assert response.json() == {"mode": "empty", "delay": 0.2}
    assert (standin.mode, standin.delay) == ("empty", 0.2)
    started = time.monotonic()
    assert say(standin, "/session_start") == []
    assert time.monotonic() - started >= 0.2
    for bad in ({"mode": "nonsense"}, {"delay": "soon"}, ["empty"]):
        assert requests.post(control, json=bad, timeout=5).status_code == 400
    assert (standin.mode, standin.delay) == ("empty", 0.2)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="error500"):
        RasaStandIn(mode="error_500")


def test_reply_with_answers_once_exactly(standin: RasaStandIn) -> None:
    canned = [{"recipient_id": "someone", "text": "uno\n\ndos"}, {"attachment": {"type": "video"}}]
    standin.reply_with(canned)
    assert say(standin, "hola", sender="CA7") == canned
    assert texts(say(standin, "hola", sender="CA7")) == [
        "Perdone, no le entendí. Puedo bloquear una tarjeta perdida o robada."
    ]


def test_command_line_runs_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "twilio_bridge.testing.standin", "--port", "0", "--mode", "empty"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().split("=", 1)[1]
        assert url.endswith("/webhooks/rest/webhook")
        assert requests.post(url, json={"sender": "CA1", "message": "hola"}, timeout=5).json() == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()


def test_echo_mode_answers_each_text_with_itself_whatever_came_before(standin: RasaStandIn) -> None:
    standin.mode = "echo"
    assert texts(say(standin, "/session_start", sender="CA1")) == [GREETING]
    assert texts(say(standin, "perdí mi tarjeta", sender="CA1")) == [ECHO + "perdí mi tarjeta"]
    assert texts(say(standin, "perdí mi tarjeta", sender="CA1")) == [ECHO + "perdí mi tarjeta"]
