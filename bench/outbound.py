"""How fast the outbound API answers, and how soon its messages reach Twilio.

Starts the fake Twilio API (Messages and Calls, in this process), the Rasa stand-in and the bridge under
gunicorn (gunicorn.conf.py, SQLite state in a temporary directory), then posts WhatsApp templates for
several users at once and prints the API's answer times and when the templates reached the Messages API;
then the same for calls (each answer waits for the Calls API).

    .venv/bin/python bench/outbound.py [--messages 300] [--calls 100] [--users 50] [--concurrency 16] [--workers N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bridge, messages_api, percentile, standin  # noqa: E402

TOKEN = "bench-outbound-token-0123456789"
TEMPLATE = "HX" + "b" * 32


def timed_posts(url: str, path: str, payloads: list[dict], concurrency: int) -> list[float]:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def post(payload: dict) -> float:
        started = time.monotonic()
        answer = session.post(url + path, json=payload, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        return (time.monotonic() - started) * 1000

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, payloads))


def summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", help="gunicorn worker processes (default: the shipped configuration's)")
    args = parser.parse_args()

    env = {**({"GUNICORN_WORKERS": args.workers} if args.workers else {}), "OUTBOUND_API_TOKEN": TOKEN,
           "TWILIO_VOICE_FROM": "+14155550199", "PUBLIC_BASE_URL": "https://ivr.example.com"}  # what Twilio would call back; the fake only records it
    with standin(0.0) as rasa_url, messages_api() as (api, rest_mode), \
            bridge(rasa_url, env={**env, **rest_mode}) as running:
        workers = len(running.worker_pids())
        templates = [{"to": f"whatsapp:+52155{n % args.users:08d}", "content_sid": TEMPLATE,
                      "variables": {"1": f"{n:04d}"}, "context": {"n": n}} for n in range(args.messages)]
        started = time.monotonic()
        message_ms = timed_posts(running.url, "/api/outbound/messages", templates, args.concurrency)
        posted_in = time.monotonic() - started
        sent = api.wait_for(args.messages, timeout=120)
        sent_in = time.monotonic() - started
        calls = [{"to": f"+52155{n % args.users:08d}", "context": {"n": n}} for n in range(args.calls)]
        call_ms = timed_posts(running.url, "/api/outbound/calls", calls, args.concurrency)

    print(f"{args.messages} templates to {args.users} users and {args.calls} calls, {args.concurrency} requests at a "
          f"time; gunicorn with {workers} workers; SQLite state")
    print(f"POST /api/outbound/messages (202, queued durably): {summary(message_ms)} (all in {posted_in:.1f} s)")
    print(f"templates at the Messages API: {len(sent)}/{args.messages}, the last {sent_in:.1f} s after the first POST")
    print(f"POST /api/outbound/calls (202 after the Calls API answered): {summary(call_ms)}")


if __name__ == "__main__":
    main()
