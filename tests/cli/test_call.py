"""`python twilio_voice_server.py call`: driven through a pseudo-terminal and by script, over real HTTP."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest
from werkzeug.wrappers import Request, Response

from tests.cli_helpers import ENTRY, cli_env, run_cli
from tests.conftest import AUTH_TOKEN, HUMAN, LiveServer
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn

GREETING = "bridge: Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"
GATHER = ('<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="dtmf speech" '
          'action="/webhook/twilio/speech"><Say>Hola.</Say></Gather></Response>')


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def spawn_call(args: list[str], env: dict[str, str], cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, [str(ENTRY), "call", *args], env=env, cwd=str(cwd),
                          encoding="utf-8", timeout=10, dimensions=(40, 200))
    child.expect_exact("Ctrl-D hangs up.")
    return child


def test_a_call_typed_at_a_terminal_reaches_a_person_who_is_busy(bridge_url: str, standin: RasaStandIn,
                                                                  tmp_path: Path) -> None:
    env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=port_of(bridge_url))
    child = spawn_call([], env, tmp_path)
    child.expect_exact(GREETING)
    child.expect_exact("caller> ")
    child.sendline("perdí mi tarjeta")
    child.expect_exact("últimos cuatro dígitos.")
    child.expect_exact("caller> ")
    child.sendline("#1234")
    child.expect_exact("bridge: La tarjeta que termina en 1 2 3 4. ¿La bloqueo?")
    child.expect_exact("caller> ")
    child.sendline("")
    child.expect_exact("¿Sigue ahí?")
    child.expect_exact("caller> ")
    child.sendline("quiero hablar con un asesor")
    child.expect_exact(f"[dialing {HUMAN}]")
    child.expect_exact("[completed]> ")
    child.sendline("ocupado")
    child.expect_exact("[choose one of: completed, busy, no-answer, failed, canceled]")
    child.sendline("busy")
    child.expect_exact("no hay nadie disponible")
    child.expect_exact("[call ended]")
    child.expect_exact("[status callback: HTTP 204]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    sid = standin.received[0]["sender"]
    assert [r["message"] for r in standin.received] == [
        "/session_start", "perdí mi tarjeta", "1234", "quiero hablar con un asesor", "/session_end"]
    assert standin.received[2]["metadata"]["input"] == "dtmf"
    assert {r["sender"] for r in standin.received} == {sid}


def test_ctrl_d_hangs_up_and_ends_the_rasa_session(bridge_url: str, standin: RasaStandIn, tmp_path: Path) -> None:
    child = spawn_call([bridge_url], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path)
    child.expect_exact("caller> ")
    child.sendeof()
    child.expect_exact("[status callback: HTTP 204]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert [r["message"] for r in standin.received] == ["/session_start", "/session_end"]


def test_a_script_runs_the_call_and_prints_the_transcript(bridge_url: str, standin: RasaStandIn,
                                                           tmp_path: Path) -> None:
    script = tmp_path / "block.txt"
    script.write_text("me robaron la tarjeta\nuno dos tres cuatro\n#1\nno, gracias\n", encoding="utf-8")
    done = run_cli(["call", bridge_url, "--script", str(script)], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        GREETING,
        "caller> me robaron la tarjeta",
        "bridge: Entiendo. Para bloquear su tarjeta, marque o diga los últimos cuatro dígitos.",
        "caller> uno dos tres cuatro",
        "bridge: La tarjeta que termina en 1 2 3 4. ¿La bloqueo?",
        "bridge: Diga o marque 1 para Sí, 2 para No.",
        "caller> #1",
        "bridge: Listo. Su tarjeta está bloqueada. Su número de referencia es 4 8 2 1.",
        "bridge: ¿Algo más?",
        "caller> no, gracias",
        "bridge: Gracias por llamar. Hasta luego.",
        "[bridge hung up]",
        "[call ended]",
        "[status callback: HTTP 204]",
    ]
    assert standin.received[3]["message"] == "/affirm"


DIALING = f"[dialing {HUMAN}]"
APOLOGY = ["bridge: Lo siento, tengo un problema técnico.", "bridge: Le comunico con una persona, un momento por favor."]


def test_with_rasa_down_a_script_for_the_happy_path_fails_and_its_lines_are_not_dial_outcomes(
        bridge_url: str, standin: RasaStandIn, tmp_path: Path) -> None:
    standin.mode = "error500"
    done = run_cli(["call", bridge_url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin="perdí mi tarjeta\n#1234\n")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        *APOLOGY, DIALING,
        "dial outcome (completed, busy, no-answer, failed, canceled) [completed]> (no dial: line) completed",
        "[bridge hung up]", "[call ended]", "[status callback: HTTP 204]"]
    assert done.stderr.strip() == "call: the call ended with 2 line(s) of the script left, from line 1: 'perdí mi tarjeta'"


def test_a_script_expects_the_handoff_and_names_the_dial_outcome_on_lines_of_their_own(
        bridge_url: str, standin: RasaStandIn, tmp_path: Path) -> None:
    standin.mode = "error500"
    script = "expect: handoff\nexpect: problema técnico\ndial: busy\nexpect: hangup\nexpect: llame más tarde\n"
    done = run_cli(["call", bridge_url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin=script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        *APOLOGY, DIALING, "[expected handoff: yes]", "[expected problema técnico: yes]",
        "dial outcome (completed, busy, no-answer, failed, canceled) [completed]> busy",
        "bridge: En este momento no hay nadie disponible. Por favor, llame más tarde. Hasta luego.",
        "[bridge hung up]", "[expected hangup: yes]", "[expected llame más tarde: yes]",
        "[call ended]", "[status callback: HTTP 204]"]


@pytest.mark.parametrize(("script", "problem"), [
    ("expect: handoff\n", "script line 1: expected 'handoff', but the bridge waits for the caller after saying: "
                          "Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"),
    ("quiero un asesor\nexpect: handoff\ndial: ocupado\n", "script line 3: dial: 'ocupado' is not one of "
                                                             "completed, busy, no-answer, failed, canceled"),
    ("adiós\nexpect: asesor\n", "script line 2: expected 'asesor', but the bridge hung up after saying: "
                                 "Gracias por llamar. Hasta luego."),
])
def test_a_script_that_expects_otherwise_fails_naming_its_line(script: str, problem: str, bridge_url: str,
                                                               standin: RasaStandIn, tmp_path: Path) -> None:
    done = run_cli(["call", bridge_url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                   stdin=script)
    assert done.returncode == 1
    assert done.stderr.strip() == f"call: {problem}"
    assert done.stdout.splitlines()[-1] == "[status callback: HTTP 204]"  # the call was still hung up properly
    assert standin.received[-1]["message"] == "/session_end"


def test_a_script_on_standard_input_signs_for_the_public_url(reconfigure: Callable[..., TwilioPhone],
                                                             standin: RasaStandIn, tmp_path: Path) -> None:
    bridge_url = reconfigure(public_base_url="https://ivr.example.com").base_url
    env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL="https://ivr.example.com")
    done = run_cli(["call", bridge_url, "--script", "-"], env, tmp_path, stdin="hola\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == [
        "bridge: Perdone, no le entendí. Puedo bloquear una tarjeta perdida o robada.",
        "[call ended]", "[status callback: HTTP 204]"]


BROKEN_ANSWERS = {
    "HTTP 500": Response("<h1>Internal Server Error</h1>", status=500, mimetype="text/html"),
    "content type 'text/html": Response("<Response><Say>Hola</Say></Response>", mimetype="text/html"),
    "XML that does not parse": Response("<Response><Say>Hola & adiós</Say></Response>", mimetype="text/xml"),
    "an empty <Say> (error 13520)": Response("<Response><Say>  </Say></Response>", mimetype="text/xml"),
}


@pytest.mark.parametrize("problem", BROKEN_ANSWERS)
def test_a_script_exits_non_zero_when_twilio_would_fail(problem: str, tmp_path: Path) -> None:
    """A bridge that greets correctly, then answers the caller's first turn with something Twilio rejects."""

    def broken_bridge(environ: dict, start_response: Callable) -> object:
        request = Request(environ)
        if request.path == "/webhook/twilio/voice":
            return Response(GATHER, mimetype="text/xml")(environ, start_response)
        return BROKEN_ANSWERS[problem](environ, start_response)

    server = LiveServer(broken_bridge)
    try:
        done = run_cli(["call", server.url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path,
                       stdin="hola\nadiós\n")
    finally:
        server.stop()
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["bridge: Hola.", "caller> hola"]
    assert done.stderr.startswith(f"call: Twilio would fail this call: {server.url}/webhook/twilio/speech answered")
    assert problem in done.stderr


def test_a_wrong_token_is_reported_as_a_signature_mismatch(bridge_url: str, tmp_path: Path) -> None:
    done = run_cli(["call", bridge_url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN="not-the-token"), tmp_path,
                   stdin="hola\n")
    assert done.returncode == 1
    assert "answered HTTP 403" in done.stderr and "TWILIO_AUTH_TOKEN and PUBLIC_BASE_URL" in done.stderr


def test_an_unreachable_bridge_is_one_clear_line(tmp_path: Path) -> None:
    server = LiveServer(Response("unused"))
    url = server.url
    server.stop()  # the port is now closed
    done = run_cli(["call", url, "--script", "-"], cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN), tmp_path, stdin="")
    assert done.returncode == 1
    assert done.stderr.strip() == f"call: cannot reach the bridge at {url}: ConnectionError"


def test_speak_reads_each_line_with_espeak_in_the_configured_language(bridge_url: str, tmp_path: Path) -> None:
    spoken = tmp_path / "spoken.txt"
    fake = tmp_path / "bin" / "espeak-ng"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s|%s|%s\\n" "$1" "$2" "$3" >> {spoken}\n')
    fake.chmod(0o755)
    env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_LANGUAGE="es-MX", PATH=f"{fake.parent}:/usr/bin:/bin")
    done = run_cli(["call", bridge_url, "--script", "-", "--speak"], env, tmp_path, stdin="adiós\n")
    assert done.returncode == 0, done.stderr
    assert spoken.read_text(encoding="utf-8").splitlines() == [
        "-v|es-mx|Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?",
        "-v|es-mx|Gracias por llamar. Hasta luego.",
    ]


@pytest.mark.parametrize(("espeak", "notice"), [
    (None, "[--speak: espeak-ng is not installed (apt-get install espeak-ng); printing only]"),
    ("#!/bin/sh\nexit 1\n", "[--speak: espeak-ng could not speak here; printing only]"),
])
def test_speak_without_a_working_espeak_says_so_once_and_goes_on(espeak: str | None, notice: str,
                                                                 bridge_url: str, tmp_path: Path) -> None:
    if espeak is not None:
        (tmp_path / "espeak-ng").write_text(espeak)
        (tmp_path / "espeak-ng").chmod(0o755)
    env = cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PATH=str(tmp_path))
    done = run_cli(["call", bridge_url, "--script", "-", "--speak"], env, tmp_path, stdin="adiós\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert notice in lines and GREETING in lines and "bridge: Gracias por llamar. Hasta luego." in lines
    assert sum("--speak" in line for line in lines) == 1
