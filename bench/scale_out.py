"""Turns per second through nginx: one bridge host against two, sharing one Redis (needs root, for ip netns).

    .venv/bin/python bench/scale_out.py [--callers 16] [--seconds 10] [--delay 0]

The same stack as tests/ops/test_scale_out.py (tests/hosts.py): gunicorn under the shipped configuration
in a network namespace per host, the shipped nginx site in front (TLS), Redis, the Rasa stand-in in this
process. Callers are threads here, each from an address of its own in 127.0.0.0/8 (the site limits
requests per address), each posting signed speech turns of its own call back to back. Prints turns/s
and time per turn (median, p99) for one host, then for two.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, percentile  # noqa: E402
from tests.hosts import Cluster, cluster  # noqa: E402
from twilio_bridge import routes  # noqa: E402
from twilio_bridge.testing.phone import sid  # noqa: E402


def caller(hosts: Cluster, source: str, until: float, timings: list[float], errors: list[str]) -> None:
    phone = hosts.phone(source)
    call = phone.call(call_sid=sid("CA"))
    while time.monotonic() < until:
        started = time.perf_counter()
        answer = phone.fetch(phone.public(routes.SPEECH), call.params(SpeechResult="hola", Confidence="0.9"))
        if answer.status != 200 or "<Gather" not in answer.body:
            errors.append(f"{answer.status} {answer.body[:80]}")
        else:
            timings.append(time.perf_counter() - started)


def run(hosts: Cluster, callers: int, seconds: float) -> tuple[float, list[float], list[str]]:
    for source in (f"127.0.3.{n + 1}" for n in range(callers)):  # warm-up: connections, TLS sessions, workers
        hosts.phone(source).call()
    timings: list[float] = []
    errors: list[str] = []
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=caller, args=(hosts, f"127.0.3.{n + 1}", until, timings, errors))
               for n in range(callers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(timings) / (time.monotonic() - started), timings, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--delay", type=float, default=0.0, help="the stand-in's answer time, seconds")
    parser.add_argument("--pin", action="store_true", help="host n on CPU n only, as if each had one core")
    args = parser.parse_args()
    settings = {"LOG_LEVEL": "WARNING", "WHATSAPP_RATE_LIMIT": "10000"}
    print(f"{args.callers} callers, {args.seconds:g} s, stand-in answering in {args.delay:g} s"
          + (", each host on a core of its own" if args.pin else ""))
    print("| hosts | turns/s | median ms | p99 ms | errors |\n|---|---|---|---|---|")
    for count in (1, 2):
        with tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as root, \
                cluster(Path(root), count, settings, {"GUNICORN_THREADS": "64"}, args.pin) as hosts:
            hosts.standin.delay = args.delay
            rate, timings, errors = run(hosts, args.callers, args.seconds)
            ms = [t * 1000 for t in timings]
            print(f"| {count} | {rate:.0f} | {median(ms):.1f} | {percentile(ms, 0.99):.1f} | {len(errors)} |", flush=True)


if __name__ == "__main__":
    main()
