"""Relay mode (ConversationRelay WebSockets) through the shipped gunicorn config, against the Rasa stand-in.

    .venv/bin/python bench/relay.py [--prompts 300] [--calls 1000] [--seconds 30] [--think 4]

1. Latency: one call, one prompt at a time, stand-in answering at once. Prompt → first text token on
   the WebSocket, against the same message posted to the stand-in directly (Rasa's own latency),
   alternating; median and p99 of each and of the difference (what the bridge adds).
2. Capacity: `--calls` calls opened over 5 s, held for `--seconds`, each caller speaking after a pause of
   U(0, 2 × think) seconds once the bridge's reply is complete, the stand-in answering every message in 1 s.
   Prints the calls held at mid-run (client side, and the bridge's own sessions-open gauge), turns/s in
   the second half, errors, the first-token time minus the stand-in's 1 s (median, p99) beside the
   stand-in's own time asked directly under the same load, and the workers' RSS per held call.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity import cpu_seconds  # noqa: E402
from bench.common import AUTH_TOKEN, Bridge, bridge, median, percentile, standin  # noqa: E402
from twilio_bridge import routes  # noqa: E402
from twilio_bridge.web.signature import sign  # noqa: E402

RAMP_SECONDS = 5.0


class RelayClient:
    """One call as ConversationRelay drives it: a signed upgrade, `setup`, then prompts."""

    def __init__(self, base_url: str, number: int):
        self.url = routes.websocket_url(base_url) + routes.RELAY
        self.sid = f"CA{number:032x}"
        self.socket: websockets.ClientConnection | None = None

    async def open(self) -> None:
        headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, self.url, {})}
        self.socket = await websockets.connect(self.url, additional_headers=headers, open_timeout=30,
                                               ping_interval=None, max_queue=None)
        await self.socket.send(json.dumps({"type": "setup", "sessionId": "VX" + self.sid[2:], "callSid": self.sid,
                                           "from": "+525512345678", "to": "+525500000000", "direction": "inbound"}))
        await self.reply()  # the greeting

    async def prompt(self, text: str) -> float:
        """Seconds from sending the prompt to the first token of the reply (the rest is read too)."""
        assert self.socket is not None
        started = time.monotonic()
        await self.socket.send(json.dumps({"type": "prompt", "voicePrompt": text, "last": True}))
        return await self.reply(started)

    async def reply(self, started: float | None = None) -> float:
        assert self.socket is not None
        first = None
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), 30))
            if message["type"] == "end":
                raise RuntimeError(f"the session ended: {message.get('handoffData')}")
            first = first or time.monotonic()
            if message.get("last"):
                return first - (started or first)

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()


async def latency(base_url: str, rasa_url: str, prompts: int) -> dict[str, list[float]]:
    direct: list[float] = []
    relayed: list[float] = []
    client = RelayClient(base_url, 1)
    await client.open()
    async with aiohttp.ClientSession() as session:
        for number in range(prompts):
            started = time.monotonic()
            async with session.post(rasa_url, json={"sender": f"direct-{number}", "message": "hola",
                                                    "metadata": {}}) as answer:
                await answer.json()
            direct.append(time.monotonic() - started)
            relayed.append(await client.prompt("hola"))
    await client.close()
    return {"direct": direct, "relayed": relayed}


async def probe_rasa(rasa_url: str, until: float, found: list[float]) -> None:
    """Rasa's own latency under the same load: the stand-in asked directly, five times a second."""
    async with aiohttp.ClientSession() as session:
        number = 0
        while time.monotonic() < until:
            started = time.monotonic()
            async with session.post(rasa_url, json={"sender": f"probe-{number}", "message": "hola",
                                                    "metadata": {}}) as answer:
                await answer.json()
            found.append(time.monotonic() - started - 1.0)
            number += 1
            await asyncio.sleep(0.2)


async def capacity(running: Bridge, rasa_url: str, calls: int, seconds: float, think: float) -> dict[str, object]:
    first_tokens: list[float] = []
    direct: list[float] = []
    errors: dict[str, int] = {}
    turns = [0]
    opened = [0]
    end_at = time.monotonic() + RAMP_SECONDS + seconds

    async def one_call(number: int) -> None:
        await asyncio.sleep(RAMP_SECONDS * number / calls)
        client = RelayClient(running.url, 10_000 + number)
        try:
            await client.open()
            opened[0] += 1
            while True:
                await asyncio.sleep(random.uniform(0, 2 * think))
                if time.monotonic() >= end_at:
                    break
                first_tokens.append(await client.prompt("hola") - 1.0)
                turns[0] += 1
        except Exception as exc:  # counted, not raised: the run measures how many calls fail
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            await client.close()

    idle_rss = sum(running.worker_rss_mb())
    tasks = [asyncio.create_task(one_call(number)) for number in range(calls)]
    tasks.append(asyncio.create_task(probe_rasa(rasa_url, end_at, direct)))
    await asyncio.sleep(RAMP_SECONDS + seconds / 2)
    held, turns_at_half, half_at = opened[0] - sum(errors.values()), turns[0], time.monotonic()
    cpu_at_half = cpu_seconds(running.worker_pids())
    gauge = sessions_open(running)
    mid_rss = sum(running.worker_rss_mb())
    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
    cpu_ms_per_turn = (cpu_seconds(running.worker_pids()) - cpu_at_half) * 1000 / max(1, turns[0] - turns_at_half)
    await asyncio.gather(*tasks)
    return {
        "calls": calls, "held": held, "sessions_open": gauge, "errors": errors, "turns": turns[0],
        "turns_per_second": (turns[0] - turns_at_half) / (time.monotonic() - half_at),
        "first_token_minus_rasa": first_tokens, "direct_minus_rasa": direct, "rss_idle_mb": idle_rss, "rss_mid_mb": mid_rss,
        "kb_per_call": (mid_rss - idle_rss) * 1024 / max(1, held), "cpu_ms_per_turn": cpu_ms_per_turn,
    }


def sessions_open(running: Bridge) -> float:
    import requests

    text = requests.get(running.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("twilio_bridge_relay_sessions_open"))


def ms(values: list[float], fraction: float | None = None) -> str:
    value = median(values) if fraction is None else percentile(values, fraction)
    return f"{value * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--think", type=float, default=4.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.calls + 512)), hard))
    env = {"VOICE_MODE": "relay", "VOICE_SILENCE_SECONDS": "60"}

    with standin(0.0) as rasa_url, bridge(rasa_url, env=env) as running:
        found = asyncio.run(latency(running.url, rasa_url, args.prompts))
    added = [r - d for r, d in zip(found["relayed"], found["direct"])]
    print(f"Latency, {args.prompts} prompts one at a time (stand-in answering at once):")
    print(f"  stand-in directly (Rasa's own):   median {ms(found['direct'])}, p99 {ms(found['direct'], 0.99)}")
    print(f"  prompt -> first token via bridge: median {ms(found['relayed'])}, p99 {ms(found['relayed'], 0.99)}")
    print(f"  added by the bridge (pairwise):   median {ms(added)}, p99 {ms(added, 0.99)}")

    with standin(1.0) as rasa_url, bridge(rasa_url, env=env) as running:
        row = asyncio.run(capacity(running, rasa_url, args.calls, args.seconds, args.think))
    tokens, direct = row.pop("first_token_minus_rasa"), row.pop("direct_minus_rasa")
    assert isinstance(tokens, list) and isinstance(direct, list)
    print(f"\nCapacity, {args.calls} calls for {args.seconds:g} s, a prompt every U(0, {2 * args.think:g}) s, "
          f"the stand-in answering in 1 s:")
    print(f"  held at mid-run: {row['held']} (bridge's gauge: {row['sessions_open']:.0f}); errors: {row['errors'] or 0}")
    print(f"  turns: {row['turns']}, {row['turns_per_second']:.1f}/s in the second half, "
          f"{row['cpu_ms_per_turn']:.2f} ms of worker CPU per turn")
    print(f"  first token minus the stand-in's 1 s: median {ms(tokens)}, p99 {ms(tokens, 0.99)}"
          f" (mean {statistics.fmean(tokens) * 1000 if tokens else float('nan'):.1f} ms)")
    print(f"  the stand-in asked directly meanwhile, minus its 1 s: median {ms(direct)}, p99 {ms(direct, 0.99)}"
          f" ({len(direct)} requests)")
    print(f"  worker RSS: {row['rss_idle_mb']:.0f} MB idle, {row['rss_mid_mb']:.0f} MB at mid-run "
          f"= {row['kb_per_call']:.0f} kB per held call")


if __name__ == "__main__":
    main()
