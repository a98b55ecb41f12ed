"""`python twilio_voice_server.py check`, against the bridge, the Rasa stand-in and a fake of Twilio's REST API."""
from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.cli_helpers import cli_env, run_cli
from tests.conftest import AUTH_TOKEN, LiveServer
from tests.servers import BRIDGE_VARIABLES, free_port
from twilio_bridge.app import close_app, create_app
from twilio_bridge.config import Settings
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn

ACCOUNT = "AC" + "1" * 32
NUMBER = "+525500000000"
PUBLIC = "https://ivr.example.com"


def findings(stdout: str) -> dict[str, list[str]]:
    """`level subject: detail` lines, by subject: the levels found for each."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        level, _, rest = line.partition(" ")
        if level in ("ok", "warn", "fail", "skip"):
            found.setdefault(rest.strip().split(":")[0], []).append(level)
    return found


def check(tmp_path: Path, *args: str, **settings: str) -> Any:
    return run_cli(["check", *args], cli_env(**settings), tmp_path)


def test_a_working_local_setup_passes_with_a_warning_about_the_public_url(bridge_url: str, standin: RasaStandIn,
                                                                          tmp_path: Path) -> None:
    done = check(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=bridge_url.rsplit(":", 1)[1],
                 RASA_WEBHOOK_URL=standin.webhook_url)
    assert done.returncode == 0, done.stdout
    assert findings(done.stdout) == {"configuration": ["ok"], "rasa": ["ok", "ok"], "signatures": ["ok"],
                                     "public url": ["warn"], "whatsapp": ["ok"], "bridge": ["ok"]}
    assert "answers 'Hello from Rasa: 3.21.0'" in done.stdout
    assert "answered 'Perdone, no le entendí." in done.stdout
    assert [r["message"] for r in standin.received] == ["hola"]
    assert standin.received[0]["sender"].startswith("check-")
    assert "https://YOUR-PUBLIC-HOST/webhook/twilio/voice" in done.stdout
    assert done.stdout.rstrip().endswith("no problems, 1 warning(s)")


def test_behind_a_proxy_the_signed_test_request_proves_token_and_url_and_the_urls_are_exact(
        reconfigure: Callable[..., TwilioPhone], standin: RasaStandIn, tmp_path: Path) -> None:
    bridge_url = reconfigure(public_base_url=PUBLIC).base_url
    done = check(tmp_path, "--bridge", bridge_url, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL=PUBLIC,
                 RASA_WEBHOOK_URL=standin.webhook_url)
    assert done.returncode == 0, done.stdout
    assert findings(done.stdout) == {"configuration": ["ok"], "rasa": ["ok", "ok"], "signatures": ["ok"],
                                     "public url": ["ok"], "whatsapp": ["ok"], "bridge": ["ok"]}
    assert f"accepted a status callback signed for {PUBLIC}" in done.stdout
    urls = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert urls == [f"{PUBLIC}/webhook/twilio/voice", f"{PUBLIC}/webhook/twilio/fallback",
                    f"{PUBLIC}/webhook/twilio/status", f"{PUBLIC}/webhook/twilio/whatsapp",
                    f"{PUBLIC}/webhook/twilio/whatsapp/status"]
    assert standin.received[-1]["message"] == "hola"  # the status callback was not a final one: no /session_end


def test_a_bad_configuration_gets_the_servers_one_line_per_variable_after_every_check_it_could_run(
        standin: RasaStandIn, tmp_path: Path) -> None:
    done = check(tmp_path, RASA_TIMEOUT="abc", PUBLIC_BASE_URL="ivr.example.com", RASA_WEBHOOK_URL=standin.webhook_url)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "twilio-bridge: configuration error: RASA_TIMEOUT='abc': is not a number",
        "twilio-bridge: configuration error: PUBLIC_BASE_URL='ivr.example.com': must be an origin such as "
        "https://ivr.example.com (no path)",
        "twilio-bridge: configuration error: TWILIO_AUTH_TOKEN: required to check Twilio's signatures "
        "(set TWILIO_VALIDATE_SIGNATURE=false only for local experiments)",
        f"twilio-bridge: no twilio.env in {tmp_path}: settings come from the environment only "
        "(./install_twilio_server.sh creates twilio.env from twilio.env.example)",
    ]
    assert findings(done.stdout) == {"configuration": ["fail", "fail", "fail", "warn"], "rasa": ["ok", "ok"],
                                     "signatures": ["fail"], "public url": ["warn"], "whatsapp": ["ok"],
                                     "bridge": ["skip"]}
    assert "fail  configuration: RASA_TIMEOUT='abc': is not a number\n" in done.stdout
    assert [r["message"] for r in standin.received] == ["hola"]  # Rasa was still tested, with the default timeout
    assert done.stdout.rstrip().endswith("4 problem(s), 2 warning(s), 1 skipped")


def test_the_settings_file_read_is_named(standin: RasaStandIn, tmp_path: Path) -> None:
    (tmp_path / "twilio.env").write_text(f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\nRASA_WEBHOOK_URL={standin.webhook_url}\n")
    env = {name: value for name, value in cli_env().items() if value or name not in BRIDGE_VARIABLES}
    done = run_cli(["check"], {**env, "PORT": str(free_port())}, tmp_path)  # set, even empty, beats the file
    assert f"ok    configuration: every variable is valid (from {tmp_path / 'twilio.env'})" in done.stdout
    assert findings(done.stdout)["rasa"] == ["ok", "ok"]


def test_rasa_down_an_unreachable_public_url_and_a_token_mismatch_all_fail(bridge_url: str, tmp_path: Path) -> None:
    closed = LiveServer(Response("unused"))
    closed.stop()
    done = check(tmp_path, "--bridge", bridge_url, TWILIO_AUTH_TOKEN="another-token",
                 PUBLIC_BASE_URL="http://127.0.0.1:8080", RASA_WEBHOOK_URL=closed.url + "/webhooks/rest/webhook")
    assert done.returncode == 1
    assert findings(done.stdout) == {"configuration": ["ok"], "rasa": ["fail"], "signatures": ["ok"],
                                     "public url": ["fail"], "whatsapp": ["ok"], "bridge": ["fail"]}
    assert "no connection (is Rasa running" in done.stdout
    assert "Twilio cannot reach 127.0.0.1" in done.stdout
    assert "TWILIO_AUTH_TOKEN or PUBLIC_BASE_URL differ" in done.stdout
    assert done.stdout.rstrip().endswith("3 problem(s), 0 warning(s)")


def test_the_running_bridge_is_looked_for_at_its_own_host(settings: Settings, standin: RasaStandIn,
                                                         tmp_path: Path) -> None:
    """HOST=10.0.0.11 (several hosts) listens there only: check must ask there, not at 127.0.0.1."""
    app = create_app(settings)
    server = make_server("127.0.0.2", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        done = check(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, HOST="127.0.0.2", PORT=str(server.server_port),
                     RASA_WEBHOOK_URL=standin.webhook_url)
    finally:
        server.shutdown()
        server.server_close()
        close_app(app)
    assert findings(done.stdout)["bridge"] == ["ok"], done.stdout


def test_an_empty_rasa_answer_fails_and_no_running_bridge_is_skipped(standin: RasaStandIn, tmp_path: Path) -> None:
    standin.mode = "empty"
    closed = LiveServer(Response("unused"))
    closed.stop()
    done = check(tmp_path, "--bridge", closed.url, TWILIO_VALIDATE_SIGNATURE="false",
                 RASA_WEBHOOK_URL=standin.webhook_url)
    assert done.returncode == 1
    assert findings(done.stdout) == {"configuration": ["ok"], "rasa": ["ok", "fail"], "signatures": ["warn"],
                                     "public url": ["warn"], "whatsapp": ["ok"], "bridge": ["skip"]}
    assert "got an empty answer" in done.stdout
    assert "TWILIO_VALIDATE_SIGNATURE=false: anyone can call the webhooks" in done.stdout
    assert done.stdout.rstrip().endswith("1 problem(s), 2 warning(s), 1 skipped")


def test_a_skipped_step_is_never_no_problems(standin: RasaStandIn, tmp_path: Path) -> None:
    done = check(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=str(free_port()), RASA_WEBHOOK_URL=standin.webhook_url)
    assert done.returncode == 0
    assert findings(done.stdout)["bridge"] == ["skip"]
    assert "no problems" not in done.stdout
    assert done.stdout.rstrip().endswith("no problem in what was checked, but not everything was: "
                                         "1 warning(s), 1 skipped")


REST = {"TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886"}


def test_whatsapp_rest_mode_proves_the_messages_api_accepts_the_credentials(
        fake_api: FakeTwilioAPI, standin: RasaStandIn, tmp_path: Path) -> None:
    done = check(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_ACCOUNT_SID=fake_api.account_sid,
                 TWILIO_API_BASE_URL=fake_api.base_url, RASA_WEBHOOK_URL=standin.webhook_url, PORT=str(free_port()),
                 **REST)
    assert findings(done.stdout)["whatsapp"] == ["ok"], done.stdout
    assert (f"ok    whatsapp: REST mode: the Messages API at {fake_api.base_url} accepted account "
            f"{fake_api.account_sid}'s credentials; replies go from whatsapp:+14155238886") in done.stdout
    assert fake_api.attempts == [] and fake_api.messages == []  # nothing was sent


def test_a_broken_whatsapp_setup_fails_check(fake_api: FakeTwilioAPI, standin: RasaStandIn, tmp_path: Path) -> None:
    settings = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": standin.webhook_url, "PORT": str(free_port()),
                **REST}
    wrong_account = check(tmp_path, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_API_BASE_URL=fake_api.base_url, **settings)
    assert wrong_account.returncode == 1
    assert (f"fail  whatsapp: REST mode: the Messages API at {fake_api.base_url} answered HTTP 401 (error 20003): "
            "Authenticate: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not this account's") in wrong_account.stdout

    closed = LiveServer(Response("unused"))
    closed.stop()
    unreachable = check(tmp_path, TWILIO_ACCOUNT_SID=fake_api.account_sid, TWILIO_API_BASE_URL=closed.url, **settings)
    assert unreachable.returncode == 1
    url = f"{closed.url}/2010-04-01/Accounts/{fake_api.account_sid}/Messages.json?PageSize=1"
    assert (f"fail  whatsapp: REST mode: cannot reach the Messages API: GET {url}: connection refused "
            "(TWILIO_API_BASE_URL); no reply would go out") in unreachable.stdout

    half = check(tmp_path, TWILIO_API_BASE_URL=fake_api.base_url, **settings)
    assert half.returncode == 0
    assert ("warn  whatsapp: TWILIO_WHATSAPP_FROM is set without TWILIO_ACCOUNT_SID: replies go in TwiML mode"
            in half.stdout)




class FakeTwilioApi:
    """Just enough of api.twilio.com for IncomingPhoneNumbers: list by number, update one."""

    def __init__(self, numbers: list[str]):
        self.numbers = {f"PN{index:032d}": {"sid": f"PN{index:032d}", "phone_number": number, "account_sid": ACCOUNT}
                        for index, number in enumerate(numbers)}
        self.refuse: dict[str, tuple[int, dict[str, object]]] = {}  # by method: the error to answer
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.server = LiveServer(self.wsgi)

    def wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        params = request.args if request.method == "GET" else request.form
        self.requests.append((request.method, request.path, dict(params)))
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{AUTH_TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refuse[request.method] = (401, {"code": 20003, "message": "Authenticate", "status": 401})
        if request.method in self.refuse:
            status, body = self.refuse[request.method]
            return self.json(body, status)(environ, start_response)
        prefix = f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers"
        if request.method == "GET" and request.path == prefix + ".json":
            wanted = request.args.get("PhoneNumber")
            page = [n for n in self.numbers.values() if n["phone_number"] == wanted]
            body = {"incoming_phone_numbers": page, "next_page_uri": None, "page": 0, "page_size": 20,
                    "uri": request.full_path, "first_page_uri": request.full_path, "previous_page_uri": None,
                    "start": 0, "end": len(page)}
            return self.json(body)(environ, start_response)
        sid = request.path.removeprefix(prefix + "/").removesuffix(".json")
        if request.method == "POST" and sid in self.numbers:
            fields = {"VoiceUrl": "voice_url", "VoiceFallbackUrl": "voice_fallback_url",
                      "StatusCallback": "status_callback"}
            self.numbers[sid].update({fields[k]: v for k, v in request.form.items() if k in fields})
            return self.json(self.numbers[sid])(environ, start_response)
        return self.json({"code": 20404, "message": "Not found", "status": 404}, 404)(environ, start_response)

    @staticmethod
    def json(body: object, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")


@pytest.fixture
def twilio_api() -> Any:
    api = FakeTwilioApi([NUMBER, "+525500000009"])
    yield api
    api.server.stop()


def apply_settings(api: FakeTwilioApi, standin: RasaStandIn, **extra: str) -> dict[str, str]:
    # PORT: a free one, so no bridge that happens to run on this machine answers the check
    return {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": PUBLIC,
            "TWILIO_API_BASE_URL": api.server.url, "RASA_WEBHOOK_URL": standin.webhook_url,
            "PORT": str(free_port()), **extra}


def test_apply_sets_the_voice_webhooks_on_the_number(twilio_api: FakeTwilioApi, standin: RasaStandIn,
                                                     tmp_path: Path) -> None:
    done = check(tmp_path, "--apply", "--number", NUMBER, **apply_settings(twilio_api, standin))
    assert "ok    apply:" in done.stdout, done.stdout
    (method, path, query), (update, update_path, form) = twilio_api.requests
    assert (method, path) == ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json")
    assert query["PhoneNumber"] == NUMBER
    assert (update, update_path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/PN{0:032d}.json")
    assert form == {"VoiceUrl": f"{PUBLIC}/webhook/twilio/voice", "VoiceMethod": "POST",
                    "VoiceFallbackUrl": f"{PUBLIC}/webhook/twilio/fallback", "VoiceFallbackMethod": "POST",
                    "StatusCallback": f"{PUBLIC}/webhook/twilio/status", "StatusCallbackMethod": "POST"}
    assert done.returncode == 0  # the bridge is not running here: skipped, not failed


def test_check_changes_nothing_without_apply(twilio_api: FakeTwilioApi, standin: RasaStandIn, tmp_path: Path) -> None:
    check(tmp_path, **apply_settings(twilio_api, standin))
    assert twilio_api.requests == []


UNAUTHORISED = (401, {"code": 20003, "message": "Authenticate", "status": 401})
INVALID_URL = (400, {"code": 21402, "message": "Url is not a valid URL", "status": 400})


@pytest.mark.parametrize(("number", "refuse", "message", "methods"), [
    ("+525511110000", {}, "+525511110000 is not a number of account AC1111", ["GET"]),
    (NUMBER, {"GET": UNAUTHORISED}, "Twilio answered HTTP 401 (error 20003): Authenticate", ["GET"]),
    (NUMBER, {"POST": INVALID_URL},
     "Twilio answered HTTP 400 (error 21402): Unable to update record: Url is not a valid URL", ["GET", "POST"]),
])
def test_apply_reports_what_twilio_refused(number: str, refuse: dict, message: str, methods: list[str],
                                           twilio_api: FakeTwilioApi, standin: RasaStandIn, tmp_path: Path) -> None:
    twilio_api.refuse = refuse
    done = check(tmp_path, "--apply", "--number", number, **apply_settings(twilio_api, standin))
    assert done.returncode == 1
    assert f"fail  apply: {message}" in done.stdout
    assert [m for m, _, _ in twilio_api.requests] == methods


def test_apply_needs_a_reachable_public_url_and_a_number(twilio_api: FakeTwilioApi, standin: RasaStandIn,
                                                         tmp_path: Path) -> None:
    local = check(tmp_path, "--apply", "--number", NUMBER,
                  **apply_settings(twilio_api, standin, PUBLIC_BASE_URL="http://localhost:5001"))
    assert local.returncode == 1
    assert "fail  apply: set PUBLIC_BASE_URL to the https origin Twilio can reach first" in local.stdout
    alone = check(tmp_path, "--apply", **apply_settings(twilio_api, standin))
    assert alone.returncode == 2 and "--apply and --number go together" in alone.stderr
    assert twilio_api.requests == []


def test_an_action_server_that_is_down_fails_the_check_though_rasa_answers(
        bridge_url: str, standin: RasaStandIn, action_server, tmp_path: Path) -> None:
    settings = dict(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=bridge_url.rsplit(":", 1)[1],
                    RASA_WEBHOOK_URL=standin.webhook_url, ACTION_SERVER_URL=action_server.url)
    up = check(tmp_path, **settings)
    assert up.returncode == 0 and findings(up.stdout)["action server"] == ["ok"], up.stdout
    action_server.up = False
    down = check(tmp_path, **settings)
    assert down.returncode == 1 and findings(down.stdout)["action server"] == ["fail"]
    assert findings(down.stdout)["rasa"] == ["ok", "ok"] and "HTTP 503" in down.stdout


def test_a_rasa_url_with_a_port_out_of_range_is_a_bad_setting_not_a_traceback(tmp_path: Path) -> None:
    done = check(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=str(free_port()),
                 RASA_WEBHOOK_URL="http://localhost:55055/webhook", ACTION_SERVER_URL="http://localhost:65536/webhook")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert ("twilio-bridge: configuration error: ACTION_SERVER_URL='http://localhost:65536/webhook': "
            "must be an http(s) URL") in done.stderr.splitlines()


def test_a_name_set_twice_in_the_settings_file_is_a_warning(standin: RasaStandIn, tmp_path: Path) -> None:
    (tmp_path / "twilio.env").write_text(f"RASA_TIMEOUT=5\nTWILIO_AUTH_TOKEN={AUTH_TOKEN}\nRASA_TIMEOUT=8\n")
    env = {name: value for name, value in cli_env().items() if name not in BRIDGE_VARIABLES}
    done = run_cli(["check"], {**env, "PORT": str(free_port()), "RASA_WEBHOOK_URL": standin.webhook_url}, tmp_path)
    assert (f"warn  configuration: {tmp_path / 'twilio.env'}: RASA_TIMEOUT is set on lines 1 and 3: the last one "
            "counts") in done.stdout.splitlines()


def test_a_password_in_rasas_url_is_not_printed(standin: RasaStandIn, tmp_path: Path) -> None:
    with_password = standin.webhook_url.replace("http://", "http://bridge:s3cret@")
    done = check(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORT=str(free_port()), RASA_WEBHOOK_URL=with_password,
                 ACTION_SERVER_URL=with_password.replace("/webhooks/rest/webhook", "/webhook"))
    assert "ok    rasa: " in done.stdout  # Rasa was reached with the URL as given
    assert "s3cret" not in done.stdout + done.stderr
    assert "bridge:***@" in done.stdout
