"""Time per voice turn through real Rasa Open Source 3.6: the trained rasa_project/ and its action server
(as the real-Rasa tests start them, tests/rasa_oss/real_rasa.py) behind the bridge under gunicorn.

    .venv/bin/python bench/rasa_turns.py [--calls 40]

Calls one after the other, each the same dialogue (greeting, "perdí mi tarjeta", 1234 on the keypad, "no",
"adiós"; nothing is blocked); a turn is timed from the signed webhook to its TwiML answer. The same
dialogues are also sent to Rasa's REST channel directly, alternating with the calls, for what the bridge
adds. Prints median and p99 of each, and how long training (or the cache) and starting Rasa took.
Needs ./install_twilio_server.sh --dev (Rasa in .venv-rasa-oss).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUTH_TOKEN, median, percentile  # noqa: E402
from tests.rasa_oss.real_rasa import not_installed, real_assistant, unavailable_here  # noqa: E402
from tests.servers import gunicorn_bridge  # noqa: E402
from twilio_bridge.testing.phone import TwilioPhone, sid  # noqa: E402

DIALOGUE = [("say", "perdí mi tarjeta"), ("press", "1234"), ("say", "no"), ("say", "adiós")]
WARM_UP_CALLS = 3


def one_call(phone: TwilioPhone) -> list[float]:
    """Milliseconds of each turn of one call, its greeting included."""
    call = phone.call()
    for kind, text in DIALOGUE:
        getattr(call, kind)(text)
    assert call.ended, call.transcript
    call.hangup()
    return [answer.seconds * 1000 for answer in call.answers]


def one_conversation(session: requests.Session, webhook_url: str) -> list[float]:
    sender = sid("CA")
    timings = []
    for message in ["/session_start", *(text for _, text in DIALOGUE), "/session_end"]:
        started = time.perf_counter()
        answer = session.post(webhook_url, json={"sender": sender, "message": message,
                                                 "metadata": {"channel": "voice"}}, timeout=30)
        answer.raise_for_status()
        if message != "/session_end":
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40)
    arguments = parser.parse_args()
    missing = unavailable_here() or not_installed()
    if missing:
        sys.exit(f"rasa_turns.py: {missing}")
    with tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as workdir:
        started = time.monotonic()
        with real_assistant(Path(workdir) / "rasa") as (rasa, _, train_seconds):
            ready = time.monotonic() - started
            webhook_url = f"{rasa.url}/webhooks/rest/webhook"
            settings = {"RASA_WEBHOOK_URL": webhook_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                        "FALLBACK_PHONE_NUMBER": "+525511112222"}
            with gunicorn_bridge(Path(workdir) / "bridge", settings) as bridge_url:
                phone, session = TwilioPhone(bridge_url, AUTH_TOKEN), requests.Session()
                bridged: list[float] = []
                direct: list[float] = []
                for number in range(WARM_UP_CALLS + arguments.calls):
                    call_turns, rasa_turns = one_call(phone), one_conversation(session, webhook_url)
                    if number >= WARM_UP_CALLS:
                        bridged += call_turns
                        direct += rasa_turns
    trained = "model from the cache" if train_seconds is None else f"rasa train {train_seconds:.0f} s"
    print(f"{trained}; Rasa and the action server started (with training) in {ready:.0f} s")
    print(f"{'turns':>6} {'median ms':>10} {'p99 ms':>8}")
    print(f"{len(direct):>6} {median(direct):>10.1f} {percentile(direct, 0.99):>8.1f}  Rasa's REST channel directly")
    print(f"{len(bridged):>6} {median(bridged):>10.1f} {percentile(bridged, 0.99):>8.1f}  "
          "a voice turn through the bridge")


if __name__ == "__main__":
    main()
