"""What the benchmarks share: the Rasa stand-in and gunicorn as real processes (started by the tests'
own tests/servers.py), a light async phone, RSS.

The load comes from asyncio (aiohttp, installed with twilio), so hundreds of callers cost the
client little of the machine's two cores. Everything listens on 127.0.0.1, on free ports.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import aiohttp
import requests

from tests.servers import ROOT, Gunicorn, answers, free_port, gunicorn_setting, running, wait_for
from twilio_bridge.testing.fake_twilio_api import ACCOUNT_SID, FakeTwilioAPI
from twilio_bridge.web.signature import sign

PYTHON = sys.executable
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
WHATSAPP_FROM = "whatsapp:+14155238886"
REDIRECT = re.compile(r"<Redirect[^>]*>([^<]+)</Redirect>")


@contextmanager
def standin(delay: float) -> Iterator[str]:
    """`python -m twilio_bridge.testing.standin` in its own process; yields its webhook URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as workdir, running(
            [PYTHON, "-m", "twilio_bridge.testing.standin", "--port", str(port), "--delay", str(delay)],
            Path(workdir) / "standin.log", ready=lambda: answers(f"http://127.0.0.1:{port}/"), cwd=ROOT):
        yield f"http://127.0.0.1:{port}/webhooks/rest/webhook"


@contextmanager
def messages_api() -> Iterator[tuple[FakeTwilioAPI, dict[str, str]]]:
    """The fake Messages API in this process (it stamps each message's arrival), and the environment
    that puts the bridge in WhatsApp's REST mode against it, with no rate limit in the way."""
    with FakeTwilioAPI(auth_token=AUTH_TOKEN).start() as api:
        yield api, rest_mode(api.base_url, api.account_sid)


def rest_mode(base_url: str, account_sid: str) -> dict[str, str]:
    return {"TWILIO_ACCOUNT_SID": account_sid, "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM,
            "TWILIO_API_BASE_URL": base_url, "WHATSAPP_RATE_LIMIT": "10000"}


class MessagesApiProcess:
    """The fake Messages API in a process of its own, read through its `/_fake/messages`."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def wait_for(self, count: int, timeout: float) -> list[dict[str, object]]:
        """The messages once there are at least `count`, oldest first, or whatever arrived when time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            recorded = requests.get(self.base_url + "/_fake/messages", timeout=10).json()["messages"]
            if len(recorded) >= count or time.monotonic() > deadline:
                return recorded
            time.sleep(0.05)


@contextmanager
def messages_api_process() -> Iterator[tuple[MessagesApiProcess, dict[str, str]]]:
    """`messages_api` with the fake in a process of its own: a burst of replies to it then takes no CPU from a
    client in this process, whose timings it would stretch (as Twilio's side costs the bridge's host nothing)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as workdir, running(
            [PYTHON, "-m", "twilio_bridge.testing.fake_twilio_api", "--port", str(port), "--auth-token", AUTH_TOKEN],
            Path(workdir) / "messages-api.log", ready=lambda: answers(base_url + "/_fake/messages"), cwd=ROOT):
        yield MessagesApiProcess(base_url), rest_mode(base_url, ACCOUNT_SID)


class Bridge(Gunicorn):
    """gunicorn as the tests start it, plus what the capacity run reads of its workers."""

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def worker_rss_mb(self) -> list[float]:
        return [rss_mb(pid) for pid in self.worker_pids()]

    def configured_workers(self) -> int:
        """The worker processes gunicorn runs: `-w`/`--workers` on the command line, else gunicorn.conf.py's
        (read as gunicorn reads it, in this environment: GUNICORN_WORKERS, else one per core plus one)."""
        for n, arg in enumerate(self.command):
            if arg in ("-w", "--workers"):
                return int(self.command[n + 1])
            if arg.startswith("--workers="):
                return int(arg.split("=", 1)[1])
        conf = Path(self.command[self.command.index("-c") + 1])
        return int(gunicorn_setting("workers", self.workdir, self.env, self.cpus, conf))


@contextmanager
def bridge(rasa_url: str, *gunicorn_args: str, env: dict[str, str] | None = None,
           cpus: set[int] | None = None, app: str | None = None) -> Iterator[Bridge]:
    """The bridge under the shipped gunicorn.conf.py (plus any overriding command-line arguments), on `cpus`;
    `app` serves another WSGI app of this checkout the same way (bench/floor_app.py). BENCH_BRIDGE_ROOT names
    another checkout whose bridge is served instead, under the same load and stand-in (a "before")."""
    served_from = ROOT if app else Path(os.environ.get("BENCH_BRIDGE_ROOT") or ROOT)  # another checkout's bridge
    with tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as workdir:
        settings = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(served_from), os.environ.get("BENCH_EXTRA_PATH")])),
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RASA_WEBHOOK_URL": rasa_url, "FALLBACK_PHONE_NUMBER": "+525511112222",
            "STATE_URL": f"sqlite:///{workdir}/state.db", "LOG_LEVEL": "WARNING", **(env or {}),
        }
        served = Bridge(settings, Path(workdir), args=gunicorn_args, cpus=cpus)
        served.command[served.command.index("-c") + 1] = str(served_from / "gunicorn.conf.py")
        if app is not None:
            served.command[-1] = app
        with served as running_bridge:
            workers = served.configured_workers()  # the first answers before the last has forked: CPU and RSS need all
            wait_for(lambda: len(running_bridge.worker_pids()) == workers, 30, served.process, served.log_path)
            yield running_bridge


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Tally:
    """Per turn: seconds from the caller's words to the assistant's answer, holds followed as Twilio would."""

    seconds: list[float] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)  # time.monotonic() at each turn's answer
    errors: dict[str, int] = field(default_factory=dict)
    holds: int = 0

    def per_second_between(self, start: float, end: float) -> float:
        """Turns answered per second from `start` to `end` (monotonic): the steady rate, without a run's edges."""
        return sum(start <= at < end for at in self.answered_at) / (end - start) if end > start else float("nan")

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Caller:
    """One simulated call: Twilio's webhooks, signed, with <Redirect>s followed; no pauses (worst case)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, number: int):
        self.session = session
        self.base_url = base_url
        self.sid = f"CA{number:032x}"

    def params(self, **extra: str) -> dict[str, str]:
        return {"CallSid": self.sid, "AccountSid": "AC" + "0" * 32, "From": "+525512345678",
                "To": "+525500000000", "CallStatus": "in-progress", "Direction": "inbound", **extra}

    async def post(self, path: str, params: dict[str, str]) -> str:
        url = self.base_url + path
        headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, url, params),
                   "I-Twilio-Idempotency-Token": secrets.token_hex(16)}  # Twilio marks every webhook
        async with self.session.post(url, data=params, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=15)) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"http_{response.status}")
            return body

    async def turn(self, path: str, params: dict[str, str], tally: Tally) -> bool:
        started = time.monotonic()
        try:
            body = await self.post(path, params)
            while (redirect := REDIRECT.search(body)) is not None:
                tally.holds += 1
                body = await self.post(redirect.group(1).replace("&amp;", "&"), self.params())
        except (asyncio.TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
            tally.error(str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__)
            return False
        if "<Gather" not in body:  # an apology and a <Dial>: the bridge let this caller down
            tally.error("handoff")
            return False
        tally.answered_at.append(time.monotonic())
        tally.seconds.append(tally.answered_at[-1] - started)
        return True


async def run_calls(base_url: str, concurrency: int, seconds: float, tally: Tally, ramp: float = 0.0) -> float:
    """`concurrency` calls, each taking turns back to back until `seconds` have passed; returns the time taken.

    With `ramp` the calls start evenly spread over that many seconds, as calls come in, rather than all in
    the same millisecond: then, with every turn taking Rasa's same latency, they stay in step, and the
    bridge gets all their turns at once, then none while they wait (waves that set the p99)."""
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one_call(number: int) -> None:
            await asyncio.sleep(ramp * number / concurrency)
            while time.monotonic() < stop_at:
                caller = Caller(session, base_url, number)
                number += concurrency
                if not await caller.turn("/webhook/twilio/voice", caller.params(CallStatus="ringing"), tally):
                    continue
                for _ in range(20):  # then a fresh call, as real calls end
                    if time.monotonic() >= stop_at:
                        return
                    await caller.turn("/webhook/twilio/speech", caller.params(SpeechResult="hola",
                                                                              Confidence="0.9"), tally)

        started = time.monotonic()
        await asyncio.gather(*(one_call(n) for n in range(concurrency)))
        return time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
