"""Added latency per voice turn and per WhatsApp message: the bridge under gunicorn against the Rasa stand-in directly.

    .venv/bin/python bench/latency.py [--turns 500] [--messages 300]

One client, one request at a time, the stand-in answering at once; direct and bridged requests
alternate, so both see the same machine. The bridge runs in WhatsApp's REST mode against a local
fake Messages API. A voice turn is timed from the signed webhook to its TwiML answer; a WhatsApp
message from the signed inbound webhook to its reply's arrival at the fake Messages API (the webhook
answers an empty <Response/> at once; a delivery thread asks Rasa and sends the reply). Prints
median and p99 of each and what the bridge adds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUTH_TOKEN, bridge, median, messages_api, percentile, standin  # noqa: E402
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI  # noqa: E402
from twilio_bridge.testing.whatsapp_user import WhatsAppUser  # noqa: E402
from twilio_bridge.web.signature import sign  # noqa: E402

WARM_UP = 50  # the first requests of each kind warm up connections and caches, and are not counted
Timings = tuple[list[float], list[float]]  # milliseconds: the stand-in directly, the same through the bridge


def voice_turns(bridge_url: str, rasa_url: str, turns: int) -> Timings:
    direct_session, bridge_session = requests.Session(), requests.Session()
    params = {"CallSid": "CA" + "b" * 32, "AccountSid": "AC" + "0" * 32, "From": "+525512345678",
              "To": "+525500000000", "CallStatus": "in-progress", "SpeechResult": "hola", "Confidence": "0.9"}
    speech_url = bridge_url + "/webhook/twilio/speech"
    voice_url = bridge_url + "/webhook/twilio/voice"
    bridge_session.post(voice_url, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, voice_url, params)})
    body = {"sender": "CA" + "d" * 32, "message": "hola", "metadata": {"channel": "voice"}}
    direct, bridged = [], []
    for turn in range(turns + WARM_UP):
        started = time.perf_counter()
        assert direct_session.post(rasa_url, json=body, timeout=5).status_code == 200
        middle = time.perf_counter()
        signature = sign(AUTH_TOKEN, speech_url, params)
        answer = bridge_session.post(speech_url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)
        ended = time.perf_counter()
        assert answer.status_code == 200 and "<Gather" in answer.text, answer.text[:200]
        if turn >= WARM_UP:
            direct.append((middle - started) * 1000)
            bridged.append((ended - middle) * 1000)
    return direct, bridged


def whatsapp_messages(bridge_url: str, rasa_url: str, api: FakeTwilioAPI, messages: int) -> Timings:
    """Each message from a user of its own: a user's next message would wait for the lane the last one
    held until the delivery thread records it finished (a few ms after the reply has gone out)."""
    direct_session, bridge_session = requests.Session(), requests.Session()
    direct, bridged = [], []
    for n in range(messages + WARM_UP):
        user = WhatsAppUser(bridge_url, AUTH_TOKEN, number=f"+52155{n:08d}", session=bridge_session)
        body = {"sender": f"whatsapp:+52166{n:08d}", "message": "hola", "metadata": {"channel": "whatsapp"}}
        started = time.time()  # wall clock: the fake Messages API stamps each arrival with time.time()
        assert direct_session.post(rasa_url, json=body, timeout=5).status_code == 200
        middle = time.time()
        posted = user.send("hola")
        assert posted.answer.status == 200 and posted.replies == [], "REST mode answers an empty <Response/>"
        replies = api.wait_for(1, to=user.address, timeout=15)
        assert replies, f"no reply reached the Messages API for message {n}"
        if n >= WARM_UP:
            direct.append((middle - started) * 1000)
            bridged.append((replies[0]["at"] - middle) * 1000)
    return direct, bridged


def report(title: str, timings: Timings) -> None:
    direct, bridged = timings
    print(title)
    print(f"{'':24}{'median':>8}{'p99':>8}")
    print(f"{'stand-in directly':24}{median(direct):8.2f}{percentile(direct, 0.99):8.2f}")
    print(f"{'through the bridge':24}{median(bridged):8.2f}{percentile(bridged, 0.99):8.2f}")
    added = [b - d for b, d in zip(bridged, direct)]
    print(f"{'added by the bridge':24}{median(bridged) - median(direct):8.2f}"
          f"{percentile(bridged, 0.99) - percentile(direct, 0.99):8.2f}"
          f"   (per-pair difference: median {median(added):.2f}, p99 {percentile(added, 0.99):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500, help="voice turns (0: none)")
    parser.add_argument("--messages", type=int, default=300, help="WhatsApp messages (0: none)")
    args = parser.parse_args()
    with standin(delay=0.0) as rasa_url, messages_api() as (api, rest_mode), bridge(rasa_url, env=rest_mode) as running:
        if args.turns:
            voice = voice_turns(running.url, rasa_url, args.turns)
        if args.messages:
            whatsapp = whatsapp_messages(running.url, rasa_url, api, args.messages)
    if args.turns:
        report(f"voice turn, {args.turns} turns, stand-in answering at once (ms)", voice)
    if args.messages:
        report(f"WhatsApp message (REST mode), {args.messages} messages, inbound webhook to the reply at the "
               f"Messages API, stand-in answering at once (ms)", whatsapp)


if __name__ == "__main__":
    main()
