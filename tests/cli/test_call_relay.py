"""`python twilio_voice_server.py call --relay`: a relay-mode call typed at a terminal, its replies streamed."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect

from tests.cli_helpers import ENTRY, cli_env
from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from twilio_bridge.config import Settings
from twilio_bridge.testing.standin import RasaStandIn


def relay_bridge(serve: Callable[[Settings], LiveServer], settings: Settings) -> str:
    return serve(dataclasses.replace(settings, voice_mode="relay", voice_silence_seconds=0.5)).url


def spawn_call(args: list[str], env: dict[str, str], cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, [str(ENTRY), "call", *args], env=env, cwd=str(cwd),
                          encoding="utf-8", timeout=15, dimensions=(40, 200))
    child.expect_exact("Ctrl-D hangs up.")
    return child


def test_a_relay_call_typed_at_a_terminal_streams_the_replies_and_reaches_a_person(
        serve: Callable[[Settings], LiveServer], settings: Settings, standin: RasaStandIn, tmp_path: Path) -> None:
    url = relay_bridge(serve, settings)
    child = spawn_call(["--relay", url], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path)
    child.expect_exact("bridge: Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?")
    child.expect_exact("caller> ")
    child.sendline("perdí mi tarjeta")
    child.expect_exact("bridge: Entiendo. Para bloquear su tarjeta, marque o diga los últimos cuatro dígitos.")
    child.sendline("#1234")
    child.expect_exact("bridge: La tarjeta que termina en 1 2 3 4. ¿La bloqueo? Diga o marque 1 para Sí, 2 para No.")
    child.sendline("")
    child.expect_exact("bridge: ¿Sigue ahí? No le escuché.")
    child.sendline("quiero hablar con un asesor")
    child.expect_exact("bridge: Le comunico con un asesor.")  # the assistant's announcement, not the bridge's too
    child.expect_exact(f"[dialing {HUMAN}]")
    child.expect_exact("[completed]> ")
    child.sendline("")
    child.expect_exact("[status callback: HTTP 204]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert [r["message"] for r in standin.received] == [
        "/session_start", "perdí mi tarjeta", "1234", "quiero hablar con un asesor", "/session_end"]


def test_a_relay_call_signed_with_the_wrong_token_says_why_it_was_refused(
        serve: Callable[[Settings], LiveServer], settings: Settings, standin: RasaStandIn, tmp_path: Path) -> None:
    url = relay_bridge(serve, settings)
    child = spawn_call([url], cli_env(TWILIO_AUTH_TOKEN="another-token", VOICE_MODE="relay"), tmp_path)
    child.expect_exact("HTTP 403")
    child.expect_exact("are its TWILIO_AUTH_TOKEN and PUBLIC_BASE_URL the same as here?")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
