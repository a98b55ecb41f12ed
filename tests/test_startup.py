"""What the server says when it starts: the banner on a terminal (the env file it read, Rasa, the modes, the
webhook URLs, a warning for a plain-http PUBLIC_BASE_URL), and one log line per request (no second access line).
Under gunicorn: tests/ops/test_gunicorn.py; without twilio.env: tests/test_config.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import requests

from tests.cli_helpers import ENTRY, cli_env, run_cli
from tests.conftest import AUTH_TOKEN
from tests.servers import free_port
from twilio_bridge import __version__
from twilio_bridge.config import Settings
from twilio_bridge.startup import EnvFile, local_origin, rest_mode_missing
from twilio_bridge.testing.standin import RasaStandIn


def test_the_development_server_says_what_it_serves_and_logs_each_request_once(standin: RasaStandIn,
                                                                             tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "twilio.env").write_text(f"RASA_WEBHOOK_URL={standin.webhook_url}\n")
    env = {name: value for name, value in cli_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN).items() if name != "RASA_WEBHOOK_URL"}
    env.update(PUBLIC_BASE_URL="http://ivr.example.com", TWILIO_WHATSAPP_FROM="whatsapp:+14155238886")
    server = pexpect.spawn(sys.executable, [str(ENTRY), "--port", str(port)], env=env, cwd=str(tmp_path),
                           encoding="utf-8", timeout=15, dimensions=(60, 300))
    try:
        server.expect_exact(f"twilio-bridge {__version__} starting")
        server.expect_exact(f"settings:   {tmp_path / 'twilio.env'}")
        server.expect_exact(f"rasa:       {standin.webhook_url}: answers 'Hello from Rasa: 3.21.0'")
        server.expect_exact("voice:      gather")
        server.expect_exact("whatsapp:   TwiML replies, in the webhook's answer (REST replies need TWILIO_ACCOUNT_SID)")
        server.expect_exact(f"webhooks:   http://127.0.0.1:{port}/webhook/twilio/voice")
        server.expect_exact(f"http://127.0.0.1:{port}/webhook/twilio/whatsapp/status")
        server.expect_exact("public url: Twilio calls and signs http://ivr.example.com")
        server.expect_exact("warning:    PUBLIC_BASE_URL=http://ivr.example.com is plain http")
        server.expect_exact("Running on")

        assert requests.get(f"http://127.0.0.1:{port}/first", timeout=5).status_code == 404
        server.expect_exact("route=/first")
        assert requests.get(f"http://127.0.0.1:{port}/second", timeout=5).status_code == 404
        server.expect_exact("route=/second")
        assert "/first" not in server.before  # werkzeug's access line would have come between the two
    finally:
        server.terminate(force=True)


def test_version() -> None:
    done = run_cli(["--version"], cli_env(), Path.cwd())
    assert done.returncode == 0 and done.stdout.strip() == f"twilio-bridge {__version__}"


def test_what_rest_mode_still_needs_reads_as_a_sentence() -> None:
    assert rest_mode_missing(Settings()) == "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_WHATSAPP_FROM"
    assert rest_mode_missing(Settings(twilio_auth_token="t")) == "TWILIO_ACCOUNT_SID and TWILIO_WHATSAPP_FROM"
    assert rest_mode_missing(Settings(twilio_account_sid="AC1", twilio_auth_token="t",
                                      twilio_whatsapp_from="whatsapp:+14155238886")) == ""


def test_the_local_origin_of_an_ipv6_address_is_a_url() -> None:
    assert local_origin("::1", 5001) == "http://[::1]:5001"
    assert local_origin("::", 5001) == local_origin("0.0.0.0", 5001) == "http://127.0.0.1:5001"
    assert local_origin("10.0.0.11", 5001) == "http://10.0.0.11:5001"


def test_a_misspelled_setting_in_the_env_file_is_named_with_the_one_meant(tmp_path: Path) -> None:
    path = tmp_path / "twilio.env"
    path.write_text("TWILIO_AUTH_TOKEN=t\nPUBLIC_BASE_URI=https://ivr.example.com\n\nrasa_timeout=5\n"
                    "RASA_LICENSE=for-the-rasa-container\nCOMPOSE_PROJECT_NAME=ivr\n")
    assert EnvFile(path, named=False).notes() == [
        f"{path}: line 2: PUBLIC_BASE_URI is not a setting of the bridge (PUBLIC_BASE_URL?): ignored",
        f"{path}: line 4: rasa_timeout is not a setting of the bridge (RASA_TIMEOUT?): ignored",
    ]
