"""`python twilio_voice_server.py demo`: the stand-in and the bridge on free ports and a call through them,
driven through a pseudo-terminal as a newcomer would type it; nothing left running or on disk after."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pexpect

from werkzeug.wrappers import Response

from tests.cli_helpers import ENTRY, cli_env, run_cli
from tests.conftest import LiveServer
from tests.servers import free_ports, port_open

STARTED = re.compile(r"Rasa stand-in .* on http://127\.0\.0\.1:(\d+), the bridge on http://127\.0\.0\.1:(\d+) "
                     r"\(its log: (\S+)\)")


def test_one_command_starts_everything_on_free_ports_and_drops_into_a_call(tmp_path: Path) -> None:
    (tmp_path / "twilio.env").write_text("TWILIO_AUTH_TOKEN=\nRASA_WEBHOOK_URL=http://127.0.0.1:9/nothing\n")
    child = pexpect.spawn(sys.executable, [str(ENTRY), "demo"], env=cli_env(), cwd=str(tmp_path),
                          encoding="utf-8", timeout=15, dimensions=(40, 300))
    try:
        child.expect(STARTED)
        rasa_port, bridge_port, log = int(child.match.group(1)), int(child.match.group(2)), Path(child.match.group(3))
        assert port_open(rasa_port) and port_open(bridge_port) and log.is_file()
        child.expect_exact("For WhatsApp instead: python twilio_voice_server.py demo --chat.")
        child.expect_exact("bridge: Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?")
        child.expect_exact("caller> ")
        child.sendline("perdí mi tarjeta")
        child.expect_exact("bridge: Entiendo. Para bloquear su tarjeta, marque o diga los últimos cuatro dígitos.")
        child.expect_exact("caller> ")
        child.sendline("quiero hablar con un asesor")
        child.expect_exact("[dialing +5215500000000]")
        child.expect_exact("[completed]> ")
        child.sendline("no-answer")
        child.expect_exact("no hay nadie disponible")
        child.expect_exact("[status callback: HTTP 204]")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert not port_open(rasa_port) and not port_open(bridge_port)
    assert not log.parent.exists()  # its state and log went with it


def test_ports_can_be_chosen_and_chat_is_one_option_away(tmp_path: Path) -> None:
    bridge_port, rasa_port = free_ports(2)
    done = run_cli(["demo", "--chat", "--port", str(bridge_port), "--rasa-port", str(rasa_port), "--script", "-"],
                   cli_env(), tmp_path, stdin="perdí mi tarjeta\n")
    assert done.returncode == 0, done.stderr
    assert f"on http://127.0.0.1:{rasa_port}, the bridge on http://127.0.0.1:{bridge_port}" in done.stdout
    assert done.stdout.splitlines()[-2:] == [
        "you> perdí mi tarjeta", "bridge: Entiendo. Para bloquear su tarjeta, marque o diga los últimos cuatro dígitos."]
    assert not port_open(bridge_port) and not port_open(rasa_port)


def test_a_port_in_use_is_said_without_a_traceback(tmp_path: Path) -> None:
    taken = LiveServer(Response("taken"))
    try:
        done = run_cli(["demo", "--port", taken.url.rsplit(":", 1)[1], "--script", "-"], cli_env(), tmp_path, stdin="")
    finally:
        taken.stop()
    assert done.returncode == 1
    assert f"Port {taken.url.rsplit(':', 1)[1]} is in use by another program." in done.stderr
    assert "Traceback" not in done.stderr
