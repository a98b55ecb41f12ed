"""`notify`, `dial-out`, and `chat` / `call` playing the customer of an outbound conversation, run as an operator
runs them, against the bridge with the outbound API on, the fake Twilio API and the Rasa stand-in."""
from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import cli_env, run_cli
from tests.conftest import AUTH_TOKEN
from tests.outbound.conftest import (  # noqa: F401  (fixtures)
    CARD_ALERT,
    CUSTOMER,
    TEMPLATE,
    TOKEN,
    VOICE_FROM,
    Outbound,
    outbound,
    outbound_settings,
    start_outbound,
)
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import CARD_ALERT as SPOKEN_ALERT
from twilio_bridge.testing.standin import KEPT_BLOCKED, UNBLOCKED, RasaStandIn


def operator_env(outbound: Outbound, fake_api: FakeTwilioAPI) -> dict[str, str]:
    """The operator's twilio.env, the same as the bridge's."""
    return cli_env(PORT=outbound.url.rsplit(":", 1)[1], TWILIO_AUTH_TOKEN=AUTH_TOKEN, OUTBOUND_API_TOKEN=TOKEN,
                   TWILIO_ACCOUNT_SID=fake_api.account_sid, TWILIO_API_BASE_URL=fake_api.base_url,
                   PUBLIC_BASE_URL=outbound.url, TWILIO_VOICE_FROM=VOICE_FROM)


def test_notify_sends_a_template_and_follows_it_to_delivered(
        outbound: Outbound, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    result = run_cli(["notify", "--to", f"whatsapp:{CUSTOMER}", "--template", TEMPLATE, "--var", "1=1234",
                      "--context", json.dumps(CARD_ALERT), "--wait", "10"], operator_env(outbound, fake_api), tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("queued OM") and lines[-1] == "[delivered]"
    [sent] = fake_api.sent_to(f"whatsapp:{CUSTOMER}")
    assert (sent["content_sid"], sent["content_variables"]) == (TEMPLATE, {"1": "1234"})


def test_notify_says_in_one_line_what_the_bridge_refused(
        outbound: Outbound, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    result = run_cli(["notify", "--to", "5512345678", "--body", "hola"], operator_env(outbound, fake_api), tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("notify: the bridge answered HTTP 400: to: must be")
    assert len(result.stderr.splitlines()) == 1


def test_dial_out_starts_a_call(outbound: Outbound, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    result = run_cli(["dial-out", "--to", CUSTOMER, "--context", json.dumps(CARD_ALERT),
                      "--machine-detection", "Enable"], operator_env(outbound, fake_api), tmp_path)
    assert result.returncode == 0, result.stderr
    [call] = fake_api.calls
    assert f"Twilio call {call['sid']}" in result.stdout and call["machine_detection"] == "Enable"


def test_call_plays_the_customer_of_an_outbound_call(
        outbound: Outbound, fake_api: FakeTwilioAPI, standin: RasaStandIn, tmp_path: Path) -> None:
    result = run_cli(["call", "--outbound-context", json.dumps(CARD_ALERT), "--from", CUSTOMER, "--script", "-"],
                     operator_env(outbound, fake_api), tmp_path, stdin="#2\n")
    assert result.returncode == 0, result.stderr
    assert f"bridge: {SPOKEN_ALERT.format(digits='1 2 3 4')}" in result.stdout
    assert f"bridge: {KEPT_BLOCKED.format(digits='1 2 3 4')}" in result.stdout
    assert result.stdout.rstrip().endswith("[status callback: HTTP 204]")
    assert standin.received[0]["metadata"]["outbound_context"] == CARD_ALERT


def test_call_will_not_ring_a_real_phone(outbound: Outbound, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    env = {**operator_env(outbound, fake_api), "TWILIO_API_BASE_URL": "https://api.twilio.com"}
    result = run_cli(["call", "--outbound-context", "{}", "--script", "-"], env, tmp_path, stdin="")
    assert result.returncode == 2 and "dial-out calls a real phone" in result.stderr
    assert fake_api.calls == []


def test_chat_plays_the_customer_answering_a_template(
        outbound: Outbound, fake_api: FakeTwilioAPI, standin: RasaStandIn, tmp_path: Path) -> None:
    notification = {"content_sid": TEMPLATE, "variables": {"1": "1234"}, "context": CARD_ALERT}
    result = run_cli(["chat", "--from", CUSTOMER, "--notification", json.dumps(notification),
                      "--fake-api", fake_api.base_url, "--script", "-"], operator_env(outbound, fake_api), tmp_path,
                     stdin="sí, fui yo\n")
    assert result.returncode == 0, result.stderr
    assert f'bridge: [template {TEMPLATE} {{"1": "1234"}}]' in result.stdout
    assert f"bridge: {UNBLOCKED.format(digits='1 2 3 4')}" in result.stdout


def test_notify_wait_says_when_the_message_is_still_queued(
        outbound: Outbound, fake_api: FakeTwilioAPI, tmp_path: Path) -> None:
    fake_api.fail("500", times=None)  # Twilio keeps failing: the bridge keeps retrying
    result = run_cli(["notify", "--to", f"whatsapp:{CUSTOMER}", "--body", "hola", "--wait", "1"],
                     operator_env(outbound, fake_api), tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-2:] == ["[queued]", "[still queued after 1 s]"]
