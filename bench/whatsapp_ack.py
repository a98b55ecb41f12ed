"""How fast the WhatsApp webhook answers in REST mode while Rasa takes its time.

Starts the Rasa stand-in (answering after --delay seconds), the fake Twilio Messages API (each in a
process of its own) and the bridge under gunicorn (gunicorn.conf.py, SQLite state in a temporary
directory), then posts signed inbound messages from several users at once and prints the webhook's
answer times, and how long the replies took to arrive through the Messages API. It does so in rounds
(a burst of messages, then all their replies), and prints each round and the median over rounds: a
burst of 200 lasts a third of a second, and one hiccup of a shared machine moves its p99 by tens of ms. Also the bridge's CPU per webhook while they were
posted (its workers' CPU time over the messages, deliveries done meanwhile included) and the machine's
load average: on a shared machine the answer times move with the load, the CPU per webhook much less.
Then the replies' side: how many came per second from the first post to the last reply, the bridge's CPU
per message through the last reply (webhook and delivery together) and its workers' RSS at the end.
`--whatsapp-workers N` sets WHATSAPP_WORKERS, the delivery threads in each worker process: with Rasa
slow, they bound how many users are answered at once (bench/README.md, "WhatsApp delivery threads").

The messages are signed before the clock starts and posted from one asyncio loop (aiohttp), as Twilio's
load costs the bridge's host nothing; `--thread-client` posts them as the first figures were measured,
from a thread each through requests, signing as it goes (about 1.3 ms of the same two cores per message).

    .venv/bin/python bench/whatsapp_ack.py [--messages 200] [--users 40] [--concurrency 16] [--rounds 3] [--delay 2]
                                           [--workers N] [--whatsapp-workers N] [--state-url redis://127.0.0.1:6379/0]
                                           [--thread-client]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity import cpu_seconds  # noqa: E402
from bench.common import AUTH_TOKEN, MessagesApiProcess, bridge, messages_api_process, percentile, standin  # noqa: E402
from twilio_bridge import routes  # noqa: E402
from twilio_bridge.testing.whatsapp_user import WhatsAppUser  # noqa: E402
from twilio_bridge.web.signature import sign  # noqa: E402


def with_threads(users: list[WhatsAppUser], messages: int, concurrency: int) -> list[float]:
    """Each message from a thread of the pool, signed as it goes (WhatsAppUser, requests)."""
    def post(n: int) -> float:
        posted = users[n % len(users)].send(f"mensaje {n}")
        assert posted.replies == [], "REST mode answers an empty <Response/>"
        return posted.seconds

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, range(messages)))


async def with_asyncio(url: str, signed: list[tuple[dict[str, str], str]], concurrency: int) -> list[float]:
    """The messages signed in advance, `concurrency` in flight at once from one loop."""
    slots, seconds = asyncio.Semaphore(concurrency), []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def post(params: dict[str, str], signature: str) -> None:
            async with slots:
                started = time.monotonic()
                async with session.post(url, data=params, headers={"X-Twilio-Signature": signature}) as answer:
                    body = await answer.text()
                seconds.append(time.monotonic() - started)
                assert answer.status == 200 and "<Message" not in body, (answer.status, body[:200])

        await asyncio.gather(*(post(params, signature) for params, signature in signed))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="bursts of --messages, each after the last one's replies")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the Rasa stand-in takes to answer")
    parser.add_argument("--workers", help="gunicorn worker processes (default: the shipped configuration's)")
    parser.add_argument("--whatsapp-workers", help="WHATSAPP_WORKERS: delivery threads per worker process"
                        " (default: the bridge's own)")
    parser.add_argument("--state-url", help="STATE_URL (default: SQLite in a temporary directory)")
    parser.add_argument("--thread-client", action="store_true", help="post from threads through requests, signing as it goes")
    args = parser.parse_args()

    env = {"RASA_TIMEOUT": "8", **({"GUNICORN_WORKERS": args.workers} if args.workers else {})}
    if args.state_url:
        env["STATE_URL"] = args.state_url
    if args.whatsapp_workers:
        env["WHATSAPP_WORKERS"] = args.whatsapp_workers
    with standin(args.delay) as rasa_url, messages_api_process() as (api, rest_mode), \
            bridge(rasa_url, env={**env, **rest_mode}) as running:
        users = [WhatsAppUser(running.url, AUTH_TOKEN, number=f"+52155{n:08d}") for n in range(args.users)]
        url = running.url + routes.WHATSAPP
        workers, load_before = running.worker_pids(), os.getloadavg()[0]
        rounds = [one_round(args, users, url, api, workers, delivered_before=n * args.messages)
                  for n in range(args.rounds)]
        rss = running.worker_rss_mb()

    state = (args.state_url or "sqlite").split(":", 1)[0]
    client = "threads (requests)" if args.thread_client else "asyncio (aiohttp, signed in advance)"
    print(f"{args.messages} messages from {args.users} users a round, {args.concurrency} at a time from {client}; "
          f"Rasa answers in {args.delay:g} s; gunicorn with {len(workers)} workers, "
          f"{args.whatsapp_workers or 'the default'} delivery threads each; state in {state}")
    for n, measured in enumerate(rounds, 1):
        print(f"round {n}: webhook answer median {measured.median:.1f} ms, p99 {measured.p99:.1f} ms, max "
              f"{measured.max:.1f} ms (posted in {measured.posted_in:.1f} s), bridge CPU per webhook "
              f"{measured.cpu_ms:.2f} ms; replies {measured.delivered}/{args.messages}, the last after "
              f"{measured.delivered_in:.1f} s, bridge CPU per message through it {measured.cpu_all_ms:.2f} ms")
    middle = {name: statistics.median(getattr(measured, name) for measured in rounds)
              for name in ("median", "p99", "max", "cpu_ms", "delivered_in", "cpu_all_ms")}
    print(f"webhook answer (median of rounds): median {middle['median']:.1f} ms, p99 {middle['p99']:.1f} ms, "
          f"max {middle['max']:.1f} ms")
    print(f"bridge CPU per webhook {middle['cpu_ms']:.2f} ms; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"replies through the Messages API: {sum(m.delivered for m in rounds)}/{args.messages * args.rounds}, "
          f"the last of a round after {middle['delivered_in']:.1f} s ({args.messages / middle['delivered_in']:.1f} "
          f"replies/s); bridge CPU per message through the last reply {middle['cpu_all_ms']:.2f} ms; "
          f"RSS per worker at the end {', '.join(f'{mb:.0f}' for mb in rss)} MB")


@dataclass
class Round:
    median: float
    p99: float
    max: float
    posted_in: float
    cpu_ms: float
    delivered: int
    delivered_in: float
    cpu_all_ms: float


def one_round(args: argparse.Namespace, users: list[WhatsAppUser], url: str, api: MessagesApiProcess,
              workers: list[int], delivered_before: int) -> Round:
    """`args.messages` new messages posted, then every reply awaited (the replies of earlier rounds are
    `delivered_before`)."""
    signed = [(params, sign(AUTH_TOKEN, url, params))
              for params in (users[n % len(users)].params(f"mensaje {n}") for n in range(args.messages))]
    cpu_before = cpu_seconds(workers)
    started = time.monotonic()
    seconds = (with_threads(users, args.messages, args.concurrency) if args.thread_client
               else asyncio.run(with_asyncio(url, signed, args.concurrency)))
    posted_in = time.monotonic() - started
    cpu_ms = (cpu_seconds(workers) - cpu_before) * 1000 / args.messages
    delivered = api.wait_for(delivered_before + args.messages, timeout=args.messages * args.delay + 60)
    delivered_in = time.monotonic() - started
    ms = [s * 1000 for s in seconds]
    return Round(statistics.median(ms), percentile(ms, 0.99), max(ms), posted_in, cpu_ms,
                 len(delivered) - delivered_before, delivered_in,
                 (cpu_seconds(workers) - cpu_before) * 1000 / args.messages)

if __name__ == "__main__":
    main()
