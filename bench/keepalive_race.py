"""A turn sent just as Rasa's server times its connection out: lost without the Rasa client's idle limit,
answered with it; and what reopening a connection costs a turn.

    .venv/bin/python bench/keepalive_race.py [--rounds 150] [--keep-alive 0.2]

Real Sanic 21.12 (what Rasa Open Source 3.6 serves on, from .venv-rasa-oss) answers POSTs as Rasa's REST channel
does, with KEEP_ALIVE_TIMEOUT cut to --keep-alive seconds so that the race comes often and the run stays short.
Each round sends a turn, waits the keep-alive timeout give or take 10 ms, and sends the next: all rounds through a
RasaClient with no idle limit, then all through one whose limit is 0.8 of the timeout (as 4 s is of Sanic's 5 s).
Then the time per turn, back to back, on one reused connection and on a connection reopened for every turn.
Needs ./install_twilio_server.sh --dev.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, percentile  # noqa: E402
from tests.rasa_oss.real_rasa import VENV  # noqa: E402
from tests.servers import free_port, port_open, running  # noqa: E402
from twilio_bridge.rasa.client import RasaClient, RasaError  # noqa: E402

SANIC_APP = """
import sys
from sanic import Sanic
from sanic.response import json

app = Sanic("keepalive_race")
app.config.KEEP_ALIVE_TIMEOUT = float(sys.argv[2])

@app.post("/webhooks/rest/webhook")
async def webhook(request):
    return json([{"recipient_id": request.json["sender"], "text": "ok"}])

app.run(host="127.0.0.1", port=int(sys.argv[1]), access_log=False, motd=False)
"""
TIMED_TURNS = 300


def lost_turns(url: str, keep_alive: float, idle_limit: float, rounds: int, jitter: random.Random) -> int:
    client = RasaClient(url, timeout=2, idle_limit=idle_limit)
    lost = 0
    for _ in range(rounds):
        client.send("CA1", "hola")
        time.sleep(keep_alive + jitter.uniform(-0.01, 0.01))
        try:
            client.send("CA1", "uno dos tres cuatro")
        except RasaError:
            lost += 1
    client.pool.close()
    return lost


def turn_times(url: str, idle_limit: float) -> list[float]:
    client = RasaClient(url, timeout=2, idle_limit=idle_limit)
    times = []
    for _ in range(TIMED_TURNS + 20):
        start = time.perf_counter()
        client.send("CA1", "hola")
        times.append((time.perf_counter() - start) * 1000)
    client.pool.close()
    return times[20:]  # the first ones warm up both ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--keep-alive", type=float, default=0.2, help="Sanic's KEEP_ALIVE_TIMEOUT, seconds")
    args = parser.parse_args()
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"no {python}: run ./install_twilio_server.sh --dev first")
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/rest/webhook"
    with tempfile.TemporaryDirectory(prefix="keepalive-race-") as workdir, running(
            [str(python), "-c", SANIC_APP, str(port), str(args.keep_alive)], Path(workdir) / "sanic.log",
            ready=lambda: port_open(port)):
        for name, limit in (("no idle limit", math.inf), (f"idle limit {0.8 * args.keep_alive:g} s", 0.8 * args.keep_alive)):
            lost = lost_turns(url, args.keep_alive, limit, args.rounds, random.Random(1))
            print(f"{name}: {lost} of {args.rounds} turns sent after {args.keep_alive:g} s ±10 ms idle were lost")
        for name, limit in (("reused connection", math.inf), ("reopened connection", 0.0)):
            times = turn_times(url, limit)
            print(f"a turn on a {name}: median {median(times):.2f} ms, p99 {percentile(times, 0.99):.2f} ms")


if __name__ == "__main__":
    main()
