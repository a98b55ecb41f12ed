"""Added latency per voice turn: the bridge under gunicorn against calling the Rasa stand-in directly.

    .venv/bin/python bench/latency.py [--turns 500]

One caller, one request at a time, the stand-in answering at once; direct and bridged requests
alternate, so both see the same machine. Prints median and p99 of each and what the bridge adds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUTH_TOKEN, bridge, median, percentile, standin  # noqa: E402
from twilio_bridge.security import sign  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500)
    args = parser.parse_args()
    with standin(delay=0.0) as rasa_url, bridge(rasa_url) as running:
        direct_session, bridge_session = requests.Session(), requests.Session()
        sid = "CA" + "b" * 32
        params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+525512345678", "To": "+525500000000",
                  "CallStatus": "in-progress", "SpeechResult": "hola", "Confidence": "0.9"}
        speech_url = running.url + "/webhook/twilio/speech"
        voice_url = running.url + "/webhook/twilio/voice"
        bridge_session.post(voice_url, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, voice_url, params)})
        body = {"sender": "CA" + "d" * 32, "message": "hola", "metadata": {"channel": "voice"}}
        direct, bridged = [], []
        for turn in range(args.turns + 50):  # the first 50 of each warm up connections and caches
            started = time.perf_counter()
            assert direct_session.post(rasa_url, json=body, timeout=5).status_code == 200
            middle = time.perf_counter()
            signature = sign(AUTH_TOKEN, speech_url, params)
            answer = bridge_session.post(speech_url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)
            ended = time.perf_counter()
            assert answer.status_code == 200 and "<Gather" in answer.text, answer.text[:200]
            if turn >= 50:
                direct.append((middle - started) * 1000)
                bridged.append((ended - middle) * 1000)
    print(f"voice turn, {args.turns} turns, stand-in answering at once (ms)")
    print(f"{'':24}{'median':>8}{'p99':>8}")
    print(f"{'stand-in directly':24}{median(direct):8.2f}{percentile(direct, 0.99):8.2f}")
    print(f"{'through the bridge':24}{median(bridged):8.2f}{percentile(bridged, 0.99):8.2f}")
    added = [b - d for b, d in zip(bridged, direct)]
    print(f"{'added by the bridge':24}{median(bridged) - median(direct):8.2f}"
          f"{percentile(bridged, 0.99) - percentile(direct, 0.99):8.2f}"
          f"   (per-pair difference: median {median(added):.2f}, p99 {percentile(added, 0.99):.2f})")


if __name__ == "__main__":
    main()
