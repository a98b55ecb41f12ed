"""What a WhatsApp voice note costs: transcription time per second of audio, memory, and the time from
a voice note's webhook to its reply.

Part 1 transcribes Spanish notes spoken by espeak-ng (OGG/Opus, as WhatsApp sends them) of a few
lengths with the small Whisper model the tests use (or --model), in this process, and prints the
seconds (wall clock, and CPU) per second of audio and this process's memory before the model, after loading it, and at
its peak. Part 2 starts the Rasa stand-in, the fake Twilio API and the bridge under gunicorn (its shipped
number of workers, WHATSAPP_TRANSCRIBE=on), posts voice notes as Twilio would, from users of their own,
and times each from the webhook to the reply reaching the fake Messages API: the first one starts the
host's transcriber process, which loads the model. Then it prints the memory of each worker and of each
transcriber process (none where the bridge's workers load the model themselves, as before hearing.py).
Part 3, in the same bridge: voice turns one at a time (as bench/latency.py times them), first alone,
then while two users keep sending voice notes, each as soon as the last was answered: what a caller's
turn loses while the host transcribes.

    .venv/bin/python bench/voice_notes.py [--model DIR] [--notes 4]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUTH_TOKEN, bridge, median, messages_api, percentile, rss_mb, standin  # noqa: E402
from bench.latency import voice_turns  # noqa: E402
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI  # noqa: E402
from twilio_bridge.testing.whatsapp_user import WhatsAppUser  # noqa: E402
from twilio_bridge.testing.whisper_model import assemble_model, spoken_voice_note  # noqa: E402
from twilio_bridge.whatsapp.voice_notes import Transcriber  # noqa: E402

SENTENCES = (
    "Quiero bloquear mi tarjeta.",
    "Buenas tardes, perdí mi tarjeta de crédito ayer por la noche y quiero bloquearla, por favor.",
    "Buenas tardes. Ayer por la noche perdí mi cartera con la tarjeta de crédito y la de débito. "
    "Quiero bloquear las dos y saber cuándo me pueden enviar una nueva a mi domicilio. "
    "También quisiera saber si alguien ha hecho compras con ellas desde ayer. Muchas gracias.",
)


def transcription(model: str) -> None:
    notes = [spoken_voice_note(text) for text in SENTENCES]
    before = rss_mb_self()
    started = time.monotonic()
    transcriber = Transcriber(model, "es")
    transcriber.transcribe(notes[0])  # loads the model, and warms it up
    loaded_in = time.monotonic() - started
    after_load = rss_mb_self()
    for note in notes:
        cpu = cpu_seconds()
        heard = transcriber.transcribe(note)
        cpu = cpu_seconds() - cpu
        print(f"  {heard.seconds:5.1f} s of audio in {heard.took:5.2f} s = {heard.took / heard.seconds:.2f} s "
              f"per second of audio ({cpu / heard.seconds:.2f} CPU-s per second): {heard.text[:60]!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  memory: {before:.0f} MB before the model, {after_load:.0f} MB once loaded "
          f"(+{after_load - before:.0f} MB), peak {peak:.0f} MB; loading and the first note took {loaded_in:.1f} s")


def cpu_seconds() -> float:
    """CPU time of this process, every thread: what a transcription costs whatever else the machine does."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb_self() -> float:
    import os

    return rss_mb(os.getpid())


def webhook_to_reply(model: str, notes: int, turns: int) -> None:
    note = spoken_voice_note(SENTENCES[1])
    env = {"RASA_TIMEOUT": "8", "WHATSAPP_TRANSCRIBE": "on", "WHATSAPP_TRANSCRIBE_MODEL": model}
    with standin(0.0) as rasa_url, messages_api() as (api, rest_mode), \
            bridge(rasa_url, env={**env, **rest_mode}) as running:
        alone = voice_turns(running.url, rasa_url, turns)[1]
        seconds = []
        for n in range(notes):
            user = WhatsAppUser(running.url, AUTH_TOKEN, number=f"+52155{n:08d}")
            media_url = api.add_media(note, "audio/ogg")
            started = time.monotonic()
            user.send(media=((media_url, "audio/ogg"),))
            api.wait_for(1, to=user.address, timeout=300)
            seconds.append(time.monotonic() - started)
        workers = running.worker_pids()
        transcribers = [child for worker in workers for child in children(worker)
                        if b"whatsapp.hearing" in Path(f"/proc/{child}/cmdline").read_bytes()]
        worker_rss, transcriber_rss = [rss_mb(pid) for pid in workers], [rss_mb(pid) for pid in transcribers]
        heard, beside_notes = turns_beside_notes(running.url, rasa_url, api, note, turns)
    print(f"  first note (the model is loaded): {seconds[0]:.2f} s")
    if len(seconds) > 1:
        print(f"  later notes: median {statistics.median(seconds[1:]):.2f} s, max {max(seconds[1:]):.2f} s "
              f"({len(seconds) - 1} notes of {len(note)} bytes)")
    print(f"  voice turns alone: median {median(alone):.2f} ms, p99 {percentile(alone, 0.99):.2f} ms; while "
          f"{heard} voice notes were heard: median {median(beside_notes):.2f} ms, p99 {percentile(beside_notes, 0.99):.2f} ms "
          f"({turns} turns each)")
    print(f"  memory afterwards: {len(workers)} gunicorn workers {', '.join(f'{mb:.0f}' for mb in worker_rss)} MB; "
          f"{len(transcribers)} transcriber process{'es' if len(transcribers) != 1 else ''} "
          f"{', '.join(f'{mb:.0f}' for mb in transcriber_rss) or '-'} MB; in all {sum(worker_rss + transcriber_rss):.0f} MB")


def turns_beside_notes(bridge_url: str, rasa_url: str, api: FakeTwilioAPI, note: bytes, turns: int) -> tuple[int, list[float]]:
    """Voice turns timed while two users send voice notes back to back; and how many notes were heard meanwhile."""
    done, heard = threading.Event(), []

    def user(n: int) -> None:
        sender, sent = WhatsAppUser(bridge_url, AUTH_TOKEN, number=f"+52156{n:08d}"), 0
        while not done.is_set():
            sender.send(media=((api.add_media(note, "audio/ogg"), "audio/ogg"),))
            sent += 1
            api.wait_for(sent, to=sender.address, timeout=300)
            heard.append(n)

    users = [threading.Thread(target=user, args=(n,)) for n in range(2)]
    for thread in users:
        thread.start()
    timed = voice_turns(bridge_url, rasa_url, turns)[1]
    done.set()
    for thread in users:
        thread.join()
    return len(heard), timed


def children(pid: int) -> list[int]:
    """Every thread's children: a worker's delivery thread starts the transcriber."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a CTranslate2 Whisper directory or a model name (default: the tests' model)")
    parser.add_argument("--notes", type=int, default=6, help="voice notes posted through the bridge")
    parser.add_argument("--turns", type=int, default=3000, help="voice turns timed alone, and again beside voice notes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="twilio-bridge-bench-") as workdir:
        model = args.model or str(assemble_model(Path(workdir)))
        print(f"Transcribing Spanish voice notes with {model}:")
        transcription(model)
        print("From a voice note's webhook to its reply (bridge under gunicorn, Rasa answering at once):")
        webhook_to_reply(model, args.notes, args.turns)


if __name__ == "__main__":
    main()
