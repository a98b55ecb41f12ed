"""How soon each answer comes when Rasa fails or is slow: the timings the functional tests leave out.

    .venv/bin/python bench/answer_times.py [--rounds 3]

The bridge under gunicorn (the shipped gunicorn.conf.py) against the in-process Rasa stand-in, with
RASA_TIMEOUT=1.5. For each way Rasa fails, a voice turn (no holding) and a WhatsApp message in TwiML
mode: the slowest answer of the rounds against RASA_TIMEOUT + 1 s. With holding (hold after 0.3 s,
wait at most 3 s): the slowest single webhook while Rasa answers in 1 s, against hold + 1 s, and the
whole turn while Rasa takes 6 s, against the longest wait + 1.5 s. Exits 1 if any bound is passed.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUTH_TOKEN, bridge  # noqa: E402
from twilio_bridge.testing.phone import TwilioPhone  # noqa: E402
from twilio_bridge.testing.standin import RasaStandIn  # noqa: E402
from twilio_bridge.testing.whatsapp_user import WhatsAppUser  # noqa: E402

RASA_TIMEOUT = 1.5
FAILURES = ("error500", "html", "invalid_json", "empty", "drop", "hang")
HOLDING = {"VOICE_HOLD_SECONDS": "0.3", "RASA_MAX_WAIT_SECONDS": "3"}


def slowest(rounds: int, measure: Callable[[int], float]) -> float:
    return max(measure(n) for n in range(rounds))


def report(rows: list[tuple[str, float, float]]) -> int:
    print(f"{'answer':<58} {'slowest':>9} {'bound':>7}")
    over = 0
    for name, seconds, bound in rows:
        over += seconds > bound
        print(f"{name:<58} {seconds:>8.2f}s {bound:>6.1f}s{'  OVER' if seconds > bound else ''}")
    return 1 if over else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    rows: list[tuple[str, float, float]] = []
    with RasaStandIn().start() as rasa:
        rasa.hang_seconds = 5.0
        with bridge(rasa.webhook_url, env={"RASA_TIMEOUT": str(RASA_TIMEOUT), "RASA_MAX_WAIT_SECONDS": "1.5",
                                           "LOG_LEVEL": "ERROR"}) as server:
            phone = TwilioPhone(server.url, AUTH_TOKEN)
            for mode in FAILURES:
                def voice_turn(n: int) -> float:
                    rasa.mode = "ok"
                    call = phone.call(call_sid=f"CA{mode}{n}{time.time_ns()}")
                    rasa.mode = mode
                    call.say("perdí mi tarjeta")
                    return sum(answer.seconds for answer in call.answers[1:])

                def message(n: int) -> float:
                    rasa.mode = mode
                    return WhatsAppUser(server.url, AUTH_TOKEN, number=f"+52155{time.time_ns() % 10**8:08d}").send(
                        "hola").seconds

                rows.append((f"voice turn, Rasa {mode}: apology and a person", slowest(rounds, voice_turn),
                             RASA_TIMEOUT + 1.0))
                rows.append((f"WhatsApp (TwiML), Rasa {mode}: apology", slowest(rounds, message), RASA_TIMEOUT + 1.0))
            rasa.mode = "ok"
        with bridge(rasa.webhook_url, env={"RASA_TIMEOUT": str(RASA_TIMEOUT), **HOLDING, "LOG_LEVEL": "ERROR"}) as server:
            phone = TwilioPhone(server.url, AUTH_TOKEN)

            def held_turn(delay: float) -> Callable[[int], float]:
                def measure(n: int) -> float:
                    rasa.delay = 0.0
                    call = phone.call(call_sid=f"CAheld{n}{time.time_ns()}")
                    rasa.delay = delay
                    started = time.monotonic()
                    call.say("perdí mi tarjeta")
                    whole = time.monotonic() - started
                    return whole if delay > 3 else max(answer.seconds for answer in call.answers[1:])
                return measure

            rows.append(("held turn, Rasa in 1 s: each webhook", slowest(rounds, held_turn(1.0)), 0.3 + 1.0))
            rows.append(("held turn, Rasa in 6 s: the whole turn, to a person", slowest(rounds, held_turn(6.0)),
                         3.0 + 1.5))
            rasa.delay = 0.0
    return report(rows)


if __name__ == "__main__":
    sys.exit(main())
