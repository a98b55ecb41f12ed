"""`python twilio_voice_server.py chat`: WhatsApp messages from a terminal or a script, signed as Twilio signs them."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest
from twilio.request_validator import RequestValidator
from werkzeug.wrappers import Request, Response

from tests.cli_helpers import ENTRY, cli_env, run_cli
from tests.conftest import AUTH_TOKEN, WHATSAPP_FROM, LiveServer
from tests.servers import free_port
from tests.whatsapp.test_twiml import new_number
from tests.whatsapp.test_voice_notes import TRANSCRIPTION_WAIT
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import ASK_DIGITS, NOT_BLOCKED, RasaStandIn
from twilio_bridge.testing.whisper_model import spoken_voice_note

Serve = Callable[[Settings], LiveServer]


class WhatsAppWebhook:
    """A bridge's WhatsApp webhook in TwiML mode: checks Twilio's signature, answers with canned <Message>s."""

    def __init__(self, public_url: str | None = None):
        self.received: list[dict[str, str]] = []
        self.answer = Response('<?xml version="1.0" encoding="UTF-8"?><Response><Message>Hola, {name}.</Message>'
                               '<Message><Body>1. Sí\n2. No</Body></Message></Response>', mimetype="text/xml")
        self.public_url = public_url
        self.server = LiveServer(self.wsgi)

    def wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        url = (self.public_url or self.server.url) + request.path
        signature = request.headers.get("X-Twilio-Signature", "")
        if request.path != "/webhook/twilio/whatsapp":
            return Response("Not found", 404)(environ, start_response)
        if not RequestValidator(AUTH_TOKEN).validate(url, request.form, signature):
            return Response("Forbidden", 403)(environ, start_response)
        self.received.append(dict(request.form))
        answer = self.answer.get_data(as_text=True).replace("{name}", request.form.get("ProfileName", ""))
        return Response(answer, status=self.answer.status_code, mimetype=self.answer.mimetype)(environ, start_response)


@pytest.fixture
def webhook() -> Any:
    fake = WhatsAppWebhook()
    yield fake
    fake.server.stop()


def test_a_chat_typed_at_a_terminal_posts_whatsapp_messages_and_prints_the_replies(
        webhook: WhatsAppWebhook, tmp_path: Path) -> None:
    env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=webhook.server.url.rsplit(":", 1)[1])
    child = pexpect.spawn(sys.executable, [str(ENTRY), "chat", "--name", "Luis"], env=env, cwd=str(tmp_path),
                          encoding="utf-8", timeout=10, dimensions=(40, 200))
    child.expect_exact("Ctrl-D ends the chat.")
    child.expect_exact("you> ")
    child.sendline("perdí mi tarjeta")
    child.expect_exact("bridge: Hola, Luis.")
    child.expect_exact("bridge: 1. Sí\r\n        2. No")
    child.expect_exact("you> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (message,) = webhook.received
    assert message["Body"] == "perdí mi tarjeta" and message["ProfileName"] == "Luis"
    assert message["From"] == "whatsapp:+5215512345678" and message["WaId"] == "5215512345678"
    assert message["To"] == "whatsapp:+14155238886" and message["MessageSid"].startswith("SM")


def test_a_chat_script_signs_for_the_public_url_and_skips_blank_lines(tmp_path: Path) -> None:
    webhook = WhatsAppWebhook(public_url="https://ivr.example.com")
    try:
        env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL="https://ivr.example.com")
        done = run_cli(["chat", webhook.server.url, "--script", "-", "--from", "+5215598765432"], env, tmp_path,
                       stdin="hola\n\nadiós\n")
    finally:
        webhook.server.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["you> hola", "bridge: Hola, Ana.", "bridge: 1. Sí", "        2. No",
                                        "you> ", "you> adiós", "bridge: Hola, Ana.", "bridge: 1. Sí", "        2. No"]
    assert [m["From"] for m in webhook.received] == ["whatsapp:+5215598765432"] * 2


def test_an_empty_answer_is_shown_as_no_reply(webhook: WhatsAppWebhook, tmp_path: Path) -> None:
    webhook.answer = Response("<Response/>", mimetype="text/xml")
    done = run_cli(["chat", webhook.server.url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin="hola\n")
    assert done.returncode == 0
    assert done.stdout.splitlines()[1].startswith("[no reply in the answer; in REST mode")


@pytest.mark.parametrize(("answer", "problem"), [
    (Response("oops", status=500), "HTTP 500"),
    (Response("<Response><Message>" + "x" * 1601 + "</Message></Response>", mimetype="text/xml"),
     "a <Message> of 1601 characters; the limit is 1600"),
    (Response("<Response><Message> </Message></Response>", mimetype="text/xml"), "an empty <Message> (error 14103)"),
    (Response("<Response><Say>Hola</Say></Response>", mimetype="text/xml"), "<Say>, not a messaging verb"),
])
def test_a_chat_script_exits_non_zero_when_twilio_would_fail(answer: Response, problem: str,
                                                             webhook: WhatsAppWebhook, tmp_path: Path) -> None:
    webhook.answer = answer
    done = run_cli(["chat", webhook.server.url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin="hola\nadiós\n")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["you> hola"]
    assert done.stderr.strip().endswith(problem)
    assert done.stderr.startswith("chat: Twilio would fail this message:")


def test_a_wrong_token_and_a_bridge_without_whatsapp_are_told_apart(webhook: WhatsAppWebhook,
                                                                    tmp_path: Path) -> None:
    wrong = run_cli(["chat", webhook.server.url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN="nope"), tmp_path,
                    stdin="hola\n")
    assert wrong.returncode == 1 and wrong.stderr.strip().endswith("answered HTTP 403")
    voice_only = LiveServer(Response("Not found", status=404))
    try:
        missing = run_cli(["chat", voice_only.url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                          stdin="hola\n")
    finally:
        voice_only.stop()
    assert missing.returncode == 1 and missing.stderr.strip().endswith("(this bridge has no WhatsApp webhook)")


def test_in_rest_mode_a_chat_script_prints_the_replies_as_they_reach_a_running_fake_api(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    bridge = serve(rest_settings)
    number = new_number()
    done = run_cli(["chat", bridge.url, "--script", "-", "--from", number, "--fake-api", fake_api.base_url],
                   cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin="perdí mi tarjeta\n1234\nmuéstrame la imagen\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "you> perdí mi tarjeta", f"bridge: {ASK_DIGITS}",
        "you> 1234", "bridge: La tarjeta que termina en 1 2 3 4. ¿La bloqueo?", "        >1 [Sí]  >2 [No]",
        "you> muéstrame la imagen", "bridge: Así se ve su tarjeta.", "bridge: [media https://example.com/card.png]"]
    assert [m["from"] for m in fake_api.sent_to(f"whatsapp:{number}")] == [WHATSAPP_FROM] * 4


def test_chat_runs_a_fake_api_on_a_port_and_says_how_to_point_the_bridge_at_it(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, tmp_path: Path) -> None:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    bridge = serve(dataclasses.replace(rest_settings, twilio_api_base_url=api_url))
    env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_ACCOUNT_SID=rest_settings.twilio_account_sid or "")
    child = pexpect.spawn(sys.executable, [str(ENTRY), "chat", bridge.url, "--from", new_number(), "--fake-api",
                                           str(port), "--wait", "1"], env=env, cwd=str(tmp_path),
                          encoding="utf-8", timeout=10, dimensions=(40, 400))
    child.expect_exact(f"Fake Twilio Messages API on {api_url}: start the bridge with "
                       f"TWILIO_API_BASE_URL={api_url} TWILIO_ACCOUNT_SID={rest_settings.twilio_account_sid} "
                       f"TWILIO_WHATSAPP_FROM={WHATSAPP_FROM} and this TWILIO_AUTH_TOKEN.")
    child.expect_exact("you> ")
    child.sendline("perdí mi tarjeta")
    child.expect_exact(f"bridge: {ASK_DIGITS}")
    child.expect_exact("you> ")
    standin.mode = "hang"  # no reply in time: said, and the chat goes on
    child.sendline("1234")
    child.expect_exact(f"[no reply reached the fake Messages API at {api_url} within 1 s")
    child.expect_exact("you> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_chat_script_exits_non_zero_when_no_reply_arrives_in_time(
        serve: Serve, rest_settings: Settings, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    bridge = serve(rest_settings)  # sends to the fixture's fake API, not to the one the chat runs
    elsewhere = free_port()
    done = run_cli(["chat", bridge.url, "--script", "-", "--from", new_number(), "--fake-api", str(elsewhere),
                    "--wait", "0.5"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path, stdin="hola\nadiós\n")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "you> hola"
    assert done.stderr.startswith(f"chat: no reply reached the fake Messages API at http://127.0.0.1:{elsewhere} "
                                  "within 0.5 s (the bridge's TWILIO_API_BASE_URL must be")


def test_a_fake_api_that_cannot_be_run_or_reached_is_said_at_once(fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    taken = fake_api.base_url.rsplit(":", 1)[1]
    busy = run_cli(["chat", "--script", "-", "--fake-api", taken], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin="hola\n")
    assert busy.returncode == 2
    assert busy.stderr.strip().endswith(f"give its URL: --fake-api http://127.0.0.1:{taken}")
    nowhere = f"http://127.0.0.1:{free_port()}"
    gone = run_cli(["chat", "--script", "-", "--fake-api", nowhere], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin="hola\n")
    assert gone.returncode == 2
    assert gone.stderr.strip() == f"chat: cannot reach the fake Messages API at {nowhere}: ConnectionError"


def test_chat_shows_buttons_to_tap_and_a_tap_sends_their_payload(
        serve: Serve, rest_settings: Settings, standin: RasaStandIn, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    bridge = serve(rest_settings)
    number = new_number()
    standin.reply_with([{"text": "¿Qué trámite desea hacer?", "buttons": [
        {"title": title, "payload": f"/option_{n}"} for n, title in enumerate(
            ["Bloquear una tarjeta perdida", "Consultar el saldo", "Pagar", "Hablar con un asesor"], 1)]}],
        f"whatsapp:{number}")
    standin.reply_with([{"text": "De acuerdo: bloquear una tarjeta."}], f"whatsapp:{number}")
    done = run_cli(["chat", bridge.url, "--script", "-", "--from", number, "--fake-api", fake_api.base_url],
                   cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path, stdin="hola\n>7\n>1\nperdí mi tarjeta\n1234\n>2\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "you> hola", "bridge: ¿Qué trámite desea hacer?", "        [Ver opciones]",
        "        >1 [Bloquear una tarjeta…]", "        >2 [Consultar el saldo]", "        >3 [Pagar]",
        "        >4 [Hablar con un asesor]",
        "you> >7", "[no button 7: tap >1 to >4]",
        "you> >1", "[tapped Bloquear una tarjeta…]", "bridge: De acuerdo: bloquear una tarjeta.",
        "you> perdí mi tarjeta", f"bridge: {ASK_DIGITS}",
        "you> 1234", "bridge: La tarjeta que termina en 1 2 3 4. ¿La bloqueo?", "        >1 [Sí]  >2 [No]",
        "you> >2", "[tapped No]", f"bridge: {NOT_BLOCKED}"]
    sent = [(r["message"], r["metadata"]["input"]) for r in standin.received if r["sender"] == f"whatsapp:{number}"]
    assert sent == [("hola", "text"), ("/option_1", "button"), ("perdí mi tarjeta", "text"), ("1234", "text"),
                    ("/deny", "button")]


def test_chat_sends_a_voice_note_from_a_file(serve: Serve, voice_settings: Settings, standin: RasaStandIn,
                                             fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    note = tmp_path / "nota.ogg"
    note.write_bytes(spoken_voice_note("Me robaron la tarjeta, quiero bloquearla"))
    bridge = serve(voice_settings)
    number = new_number()
    done = run_cli(["chat", bridge.url, "--script", "-", "--from", number, "--fake-api", fake_api.base_url,
                    "--voice-note", str(note), "--wait", str(TRANSCRIPTION_WAIT)], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN),
                   tmp_path, stdin="", timeout=TRANSCRIPTION_WAIT + 30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["you> [voice note nota.ogg]", f"bridge: {ASK_DIGITS}"]
    [heard] = [r for r in standin.received if r["sender"] == f"whatsapp:{number}"]
    assert heard["metadata"]["input"] == "voice_note" and "bloquear" in heard["message"].lower()


def test_chat_voice_note_needs_the_fake_api(tmp_path: Path) -> None:
    note = tmp_path / "nota.ogg"
    note.write_bytes(b"OggS")
    done = run_cli(["chat", "http://127.0.0.1:9", "--voice-note", str(note)], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN),
                   tmp_path)
    assert done.returncode == 2 and "--voice-note needs --fake-api" in done.stderr
