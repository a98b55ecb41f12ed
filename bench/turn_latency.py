"""What the bridge adds to a gather-mode voice turn, measured with wrk (or a Python client without it).

    .venv/bin/python bench/turn_latency.py [--seconds 10] [--rounds 3] [--state-url redis://...] [--floor]
                                           [-- extra gunicorn arguments, e.g. -k gthread]

The Rasa stand-in answers at once, in a process of its own; the bridge runs under the shipped
gunicorn.conf.py. One connection, one request at a time. Each bridge request is a speech turn of a
new call (a new CallSid), signed as Twilio signs it; each direct request is the same message to the
stand-in with a new sender. Rounds alternate direct and bridged, so both see the same machine, and
the figures are the median over rounds of each round's median and p99. wrk (apt-get install wrk)
replays requests signed in advance (a file wrk's Lua reads); without it a Python client does the same.

`--floor` adds a third side: bench/floor_app.py under the same gunicorn.conf.py, a turn with nothing
but the form read, the Rasa request and a TwiML answer. What it adds over the stand-in is the stack's
(gunicorn, Flask, the HTTP client); what the bridge adds over it is the bridge's own work.
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlencode

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUTH_TOKEN, Bridge, bridge, median, percentile, standin  # noqa: E402
from twilio_bridge import routes  # noqa: E402
from twilio_bridge.testing.phone import sid  # noqa: E402
from twilio_bridge.web.hooks import IDEMPOTENCY_HEADER  # noqa: E402
from twilio_bridge.web.signature import sign  # noqa: E402

PER_SECOND = 4000  # requests signed in advance per second of a run: more than one connection sends
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
WRK_LUA = """
local requests = {}
init = function(args)  -- not at load: wrk sets the Host header (HTTP/1.1 requires one) just before init
  for line in io.lines("%(table)s") do
    local path, content_type, signature, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {["Content-Type"] = content_type}
    if signature ~= "" then headers["X-Twilio-Signature"] = signature end
    if token ~= "" then headers["I-Twilio-Idempotency-Token"] = token end
    requests[#requests + 1] = wrk.format("POST", path, headers, body)
  end
end
local n = 0
request = function()
  n = n %% #requests + 1
  return requests[n]
end
"""


def speech_turns(bridge_url: str, count: int) -> list[dict[str, object]]:
    """Speech turns of `count` new calls, signed for the bridge's own URL and marked, as Twilio marks every
    webhook, with an idempotency token of their own (the bridge keeps each answer for a retry)."""
    url = bridge_url + routes.SPEECH
    turns = []
    for _ in range(count):
        params = {"CallSid": sid("CA"), "AccountSid": "AC" + "0" * 32, "From": "+525512345678",
                  "To": "+525500000000", "CallStatus": "in-progress", "SpeechResult": "hola", "Confidence": "0.9"}
        turns.append({"path": routes.SPEECH, "body": urlencode(params),
                      "headers": {"X-Twilio-Signature": sign(AUTH_TOKEN, url, params),
                                  "Content-Type": "application/x-www-form-urlencoded",
                                  IDEMPOTENCY_HEADER: secrets.token_hex(16)}})
    return turns


def direct_asks(rasa_url: str, count: int) -> list[dict[str, object]]:
    path = "/" + rasa_url.split("/", 3)[3]
    return [{"path": path, "headers": {"Content-Type": "application/json"},
             "body": json.dumps({"sender": sid("CA"), "message": "hola", "metadata": {"channel": "voice"}}, separators=(",", ":"))}
            for _ in range(count)]


def lua_table(requests_: list[dict[str, object]], path: Path) -> None:
    """One request a line, tab-separated, read by WRK_LUA (a table literal this long overflows Lua's constants)."""
    path.write_text("".join(
        f"{r['path']}\t{r['headers']['Content-Type']}\t{r['headers'].get('X-Twilio-Signature', '')}\t"  # type: ignore[index,union-attr]
        f"{r['headers'].get(IDEMPOTENCY_HEADER, '')}\t{r['body']}\n"  # type: ignore[index,union-attr]
        for r in requests_))


def with_wrk(origin: str, requests_: list[dict[str, object]], seconds: float, workdir: Path) -> tuple[float, float]:
    """(median ms, p99 ms) of one wrk run, one connection."""
    table, script = workdir / f"requests-{len(list(workdir.iterdir()))}.lua", workdir / "replay.lua"
    lua_table(requests_, table)
    script.write_text(WRK_LUA % {"table": table})
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds:g}s", "--latency", "-s", str(script), origin],
                         capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    found = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return found["50"], found["99"]


def with_python(origin: str, requests_: list[dict[str, object]], seconds: float) -> tuple[float, float]:
    session, timings = requests.Session(), []
    until = time.monotonic() + seconds
    for r in requests_:
        if time.monotonic() > until:
            break
        started = time.perf_counter()
        answer = session.post(origin + str(r["path"]), data=str(r["body"]).encode(), headers=r["headers"], timeout=15)
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text[:200]
    return median(timings), percentile(timings, 0.99)


@contextmanager
def floor(rasa_url: str, gunicorn_args: list[str]) -> Iterator[Bridge]:
    """bench/floor_app.py served as the bridge is (bench.common.bridge, the same gunicorn.conf.py and arguments)."""
    with bridge(rasa_url, *gunicorn_args, env={"LOG_LEVEL": "WARNING"}, app="bench.floor_app:app") as running:
        yield running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--state-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--python-client", action="store_true", help="even where wrk is installed")
    parser.add_argument("--floor", action="store_true", help="also the least a turn can cost on this stack")
    parser.add_argument("gunicorn_args", nargs="*", help="after --, for the bridge and the floor alike")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    env = {"LOG_LEVEL": "INFO", **({"STATE_URL": args.state_url} if args.state_url else {})}
    results: dict[str, list[tuple[float, float]]] = {"direct": [], **({"floor": []} if args.floor else {}), "bridge": []}
    with standin(delay=0.0) as rasa_url, bridge(rasa_url, *args.gunicorn_args, env=env) as running, \
            (floor(rasa_url, args.gunicorn_args) if args.floor else nullcontext()) as least, \
            tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as workdir:
        rasa_origin = rasa_url.split("/webhooks")[0]
        count = int(args.seconds * PER_SECOND)
        for _ in range(args.rounds):
            sides = [("direct", rasa_origin, direct_asks(rasa_url, count))]
            if least is not None:
                sides.append(("floor", least.url, speech_turns(least.url, count)))
            sides.append(("bridge", running.url, speech_turns(running.url, count)))
            for side, origin, made in sides:
                measured = (with_wrk(origin, made, args.seconds, Path(workdir)) if use_wrk
                            else with_python(origin, made, args.seconds))
                results[side].append(measured)
    client = "wrk" if use_wrk else "a Python client"
    print(f"gather-mode voice turn, {args.rounds} rounds of {args.seconds:g} s per side, {client}, one connection (ms)")
    print("| | median | p99 |\n|---|---|---|")
    summary = {side: (statistics.median(m for m, _ in runs), statistics.median(p for _, p in runs))
               for side, runs in results.items()}
    for side, label in (("direct", "stand-in directly"), ("floor", "the floor (bench/floor_app.py)"),
                        ("bridge", "through the bridge")):
        if side in summary:
            print(f"| {label} | {summary[side][0]:.2f} | {summary[side][1]:.2f} |")
    print(f"| **added by the bridge** | **{summary['bridge'][0] - summary['direct'][0]:.2f}** | "
          f"**{summary['bridge'][1] - summary['direct'][1]:.2f}** |")
    if "floor" in summary:
        for label, upper, lower in (("of which the stack (floor − stand-in)", "floor", "direct"),
                                    ("of which the bridge's own work (bridge − floor)", "bridge", "floor")):
            print(f"| {label} | {summary[upper][0] - summary[lower][0]:.2f} | {summary[upper][1] - summary[lower][1]:.2f} |")
    print("rounds (median, p99):", {side: [f"{m:.2f}/{p:.2f}" for m, p in runs] for side, runs in results.items()})


if __name__ == "__main__":
    main()
