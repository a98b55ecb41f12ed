"""How fast the WhatsApp webhook answers in REST mode while Rasa takes its time.

Starts the Rasa stand-in (answering after --delay seconds), the fake Twilio Messages API and the
bridge under gunicorn (gunicorn.conf.py, SQLite state in a temporary directory), then posts signed
inbound messages from several users at once and prints the webhook's answer times, and how long
the replies took to arrive through the Messages API.

    .venv/bin/python bench/whatsapp_ack.py [--messages 200] [--users 40] [--concurrency 16] [--delay 2]
                                           [--workers 2] [--state-url redis://127.0.0.1:6379/0]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import Gunicorn  # noqa: E402
from twilio_bridge.fake_twilio_api import FakeTwilioAPI  # noqa: E402
from twilio_bridge.standin import RasaStandIn  # noqa: E402
from twilio_bridge.whatsapp_user import WhatsAppUser  # noqa: E402

AUTH_TOKEN = "bench-auth-token"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the Rasa stand-in takes to answer")
    parser.add_argument("--workers", default="2", help="gunicorn worker processes")
    parser.add_argument("--state-url", help="STATE_URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()

    with RasaStandIn(delay=args.delay).start() as rasa, FakeTwilioAPI(auth_token=AUTH_TOKEN).start() as api, \
            tempfile.TemporaryDirectory(prefix="bench-whatsapp-") as workdir:
        env = {"RASA_WEBHOOK_URL": rasa.webhook_url, "RASA_TIMEOUT": "8", "TWILIO_ACCOUNT_SID": api.account_sid,
               "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886",
               "TWILIO_API_BASE_URL": api.base_url, "STATE_URL": args.state_url or f"sqlite:///{workdir}/state.db",
               "GUNICORN_WORKERS": args.workers, "LOG_LEVEL": "WARNING", "WHATSAPP_RATE_LIMIT": "10000"}
        bridge = Gunicorn(env, Path(workdir)).start()
        try:
            users = [WhatsAppUser(bridge.url, AUTH_TOKEN, number=f"+52155{n:08d}") for n in range(args.users)]
            started = time.monotonic()

            def post(n: int) -> float:
                posted = users[n % len(users)].send(f"mensaje {n}")
                assert posted.replies == [], "REST mode answers an empty <Response/>"
                return posted.seconds

            with ThreadPoolExecutor(args.concurrency) as pool:
                seconds = list(pool.map(post, range(args.messages)))
            posted_in = time.monotonic() - started
            delivered = api.wait_for(args.messages, timeout=args.messages * args.delay + 60)
            delivered_in = time.monotonic() - started
        finally:
            bridge.kill()

    ms = [s * 1000 for s in seconds]
    state = (args.state_url or "sqlite").split(":", 1)[0]
    print(f"{args.messages} messages from {args.users} users, {args.concurrency} at a time; "
          f"Rasa answers in {args.delay:g} s; gunicorn with {args.workers} workers; state in {state}")
    print(f"webhook answer: median {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
          f"max {max(ms):.1f} ms (all posted in {posted_in:.1f} s)")
    print(f"replies through the Messages API: {len(delivered)}/{args.messages}, the last after {delivered_in:.1f} s")


if __name__ == "__main__":
    main()
