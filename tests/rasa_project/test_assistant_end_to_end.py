"""The real assistant on the phone: `rasa train`, `rasa run`, the action server and the bridge, one whole call.

Needs Rasa Pro and its license: RASA_LICENSE, and RASA_BIN naming the `rasa` of a virtual
environment with `rasa_project/requirements.txt` (or `rasa` on PATH).
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
import requests
from assistant_processes import action_server

from tests.servers import free_ports, gunicorn_bridge, running
from twilio_bridge.testing.phone import TwilioPhone

pytestmark = [
    pytest.mark.rasa_license,
    pytest.mark.skipif(
        not os.environ.get("RASA_LICENSE"),
        reason="RASA_LICENSE is not set: Rasa Pro refuses every `rasa` command without a license",
    ),
]

AUTH_TOKEN = "e2e-auth-token-0123456789abcdef"
HUMAN = "+525511112222"
TRAIN_TIMEOUT = 1800


@pytest.fixture(scope="module")
def rasa_command() -> str:
    """Rasa Pro lives in its own virtual environment (it pins rasa-sdk apart from the bridge):
    RASA_BIN names its `rasa`, else the one on PATH."""
    command = os.environ.get("RASA_BIN") or shutil.which("rasa")
    if not command:
        pytest.skip("rasa-pro not found: set RASA_BIN to the `rasa` of a venv with rasa_project/requirements.txt")
    return command


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("CARD_SERVICE_URL", None)
    env["CARD_SERVICE_DB"] = str(tmp_path_factory.mktemp("cards") / "cards.db")
    env["RASA_TELEMETRY_ENABLED"] = "false"
    return env


@pytest.fixture(scope="module")
def model(rasa_command: str, project_dir: Path, environment: Dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    started = time.monotonic()
    trained = subprocess.run(
        [rasa_command, "train", "--out", str(out), "--fixed-model-name", "cards"],
        cwd=project_dir, env=environment, capture_output=True, text=True, timeout=TRAIN_TIMEOUT,
    )
    assert trained.returncode == 0, trained.stdout[-4000:] + trained.stderr[-4000:]
    print(f"rasa train took {time.monotonic() - started:.0f} s on {os.cpu_count()} cores")
    return out / "cards.tar.gz"


@pytest.fixture(scope="module")
def bridge_url(rasa_command: str, model: Path, project_dir: Path, environment: Dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("logs")
    actions_port, rasa_port = free_ports(2)
    endpoints = logs / "endpoints.yml"
    endpoints.write_text(f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n')
    rasa_url = f"http://127.0.0.1:{rasa_port}"
    bridge_settings = {
        "RASA_WEBHOOK_URL": f"{rasa_url}/webhooks/rest/webhook",
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "FALLBACK_PHONE_NUMBER": HUMAN,
    }
    with action_server(project_dir, actions_port, environment, logs / "actions.log"), running(
        [rasa_command, "run", "--enable-api", "--model", str(model), "--port", str(rasa_port),
         "--endpoints", str(endpoints), "--credentials", "credentials.yml"],
        cwd=project_dir, env=environment, log=logs / "rasa.log", timeout=300,
        ready=lambda: bool(requests.get(f"{rasa_url}/status", timeout=2).json().get("model_file")),
    ), gunicorn_bridge(logs / "bridge", bridge_settings) as bridge:
        assert requests.get(f"{bridge}/health", timeout=5).json()["status"] == "ok"
        yield bridge


def test_a_caller_blocks_a_lost_card_and_hangs_up(bridge_url: str) -> None:
    call = TwilioPhone(bridge_url, AUTH_TOKEN).call(from_="+525512345678", to="+525500000000")
    assert [text for text in call.heard if "asistente de tarjetas" in text] == [
        "Hola, soy el asistente de tarjetas. Puedo bloquear una tarjeta perdida o robada. ¿En qué le ayudo?"
    ]

    call.say("perdí mi tarjeta")
    assert call.heard[0] == "Dígame o marque los últimos cuatro dígitos de la tarjeta."
    assert call.gather["numDigits"] == "4" and "dtmf" in call.gather["input"]

    call.press("1234")
    assert call.heard[0] == "La tarjeta que termina en 1 2 3 4. ¿La bloqueo?"

    call.press("1")
    assert re.fullmatch(
        r"Listo\. Bloqueé la tarjeta que termina en 1 2 3 4\. "
        r"Su número de referencia es \d \d \d \d, \d \d \d \d\.", call.heard[0]
    ), call.heard
    assert call.heard[-1] == "¿Algo más?"

    call.say("no, gracias")
    assert call.heard == ["Gracias por comunicarse. Hasta luego."]
    assert call.ended
    assert call.hangup() == 204


def test_a_caller_spells_the_digits_then_asks_for_a_person(bridge_url: str) -> None:
    call = TwilioPhone(bridge_url, AUTH_TOKEN).call()
    call.say("me robaron la tarjeta")
    call.say("cinco seis siete ocho")
    assert call.heard[0] == "La tarjeta que termina en 5 6 7 8. ¿La bloqueo?"
    call.say("sí")
    assert call.heard[0].startswith("Listo. Bloqueé la tarjeta que termina en 5 6 7 8.")

    call.say("quiero hablar con una persona")
    assert call.heard[0] == "Le comunico con una persona. Un momento, por favor."
    assert call.dialed == HUMAN
    call.hangup()
