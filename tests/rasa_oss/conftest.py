"""Real Rasa in the loop: rasa_project/ trained with Rasa Open Source 3.6 (once per content), Rasa and the
action server started once per session, and the bridge under gunicorn in front of them (TwiML mode, and
REST mode with a fake Messages API). Skipped, saying why, only when the installer found no Python for Rasa."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.servers import gunicorn_bridge
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI

from .real_rasa import GroupServer, not_installed, real_assistant, unavailable_here

AUTH_TOKEN = "rasa-oss-auth-token-0123456789abcdef"
HUMAN = "+525511112222"
WHATSAPP_FROM = "whatsapp:+14155238886"


@dataclass
class Assistant:
    rasa: GroupServer
    actions: GroupServer
    train_seconds: float | None
    start_seconds: float

    @property
    def webhook_url(self) -> str:
        return f"{self.rasa.url}/webhooks/rest/webhook"


ASSISTANT_KEY = pytest.StashKey[Assistant]()  # for the run's summary line


@pytest.fixture(scope="session")
def assistant(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Assistant]:
    unavailable = unavailable_here()
    if unavailable:
        pytest.skip(unavailable)
    if not_installed():
        pytest.fail(not_installed(), pytrace=False)
    started = time.monotonic()
    with real_assistant(tmp_path_factory.mktemp("rasa-oss")) as (rasa, actions, train_seconds):
        assistant = Assistant(rasa, actions, train_seconds, time.monotonic() - started - (train_seconds or 0))
        pytestconfig.stash[ASSISTANT_KEY] = assistant
        yield assistant


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    assistant = config.stash.get(ASSISTANT_KEY, None)
    if assistant is not None:
        trained = "from the cache" if assistant.train_seconds is None else f"trained in {assistant.train_seconds:.0f} s"
        terminalreporter.write_line(f"Rasa Open Source: model {trained}; Rasa and the action server ready in "
                                    f"{assistant.start_seconds:.0f} s")


@pytest.fixture
def actions(assistant: Assistant) -> Iterator[GroupServer]:
    """The action server, running again after the test whatever the test did to it."""
    yield assistant.actions
    if assistant.actions.process is None:
        assistant.actions.start()


@pytest.fixture(scope="session")
def bridge(assistant: Assistant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bridge under gunicorn, answering WhatsApp in TwiML."""
    settings = {"RASA_WEBHOOK_URL": assistant.webhook_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "FALLBACK_PHONE_NUMBER": HUMAN}
    with gunicorn_bridge(tmp_path_factory.mktemp("bridge"), settings) as url:
        yield url


@pytest.fixture(scope="session")
def fake_api() -> Iterator[FakeTwilioAPI]:
    with FakeTwilioAPI(auth_token=AUTH_TOKEN).start() as api:
        yield api


@pytest.fixture(scope="session")
def rest_bridge(assistant: Assistant, fake_api: FakeTwilioAPI,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bridge under gunicorn, sending WhatsApp replies through the (fake) Messages API."""
    settings = {"RASA_WEBHOOK_URL": assistant.webhook_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "FALLBACK_PHONE_NUMBER": HUMAN, "TWILIO_ACCOUNT_SID": fake_api.account_sid,
                "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM, "TWILIO_API_BASE_URL": fake_api.base_url}
    with gunicorn_bridge(tmp_path_factory.mktemp("rest-bridge"), settings) as url:
        yield url
