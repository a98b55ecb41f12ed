"""The host's one transcriber (`hearing.py`): started by the first worker that needs it, shared by every
worker, alone on its lock, below the webhooks' priority, replaced when it dies, gone with its worker."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from twilio_bridge.delivery.workers import defer_to_webhooks
from twilio_bridge.testing.fake_twilio_api import FakeTwilioAPI
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser
from twilio_bridge.testing.whisper_model import spoken_voice_note
from twilio_bridge.whatsapp.hearing import ANSWER_LENGTH, AUDIO_LENGTH, HEARING, NICENESS, ROOT, HostTranscriber
from twilio_bridge.whatsapp.voice_notes import Unheard

from ..conftest import AUTH_TOKEN, HUMAN, WHATSAPP_FROM
from ..servers import Gunicorn, free_port, wait_for

HEARD_WAIT = 120.0  # loading the model and transcribing at low priority on a busy 2-core machine


@pytest.fixture(scope="module")
def note(whisper_model: Path) -> bytes:  # the model's fixture says why there is none (espeak-ng missing)
    return spoken_voice_note("Quiero reservar una mesa para el viernes por la noche")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private directory for the sockets (a Unix socket's path is at most 107 bytes), and no
    transcriber left running in it afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="tb-"))
    yield directory
    for lock in directory.rglob("*.lock"):
        for pid in lock_holders(lock):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory)


def lock_holders(lock: Path) -> list[int]:
    """The processes holding `lock` with flock, from /proc/locks."""
    inode = lock.stat().st_ino
    lines = Path("/proc/locks").read_text().splitlines()
    return [int(fields[4]) for fields in map(str.split, lines)
            if fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode]


def the_transcriber(client: HostTranscriber) -> int:
    [pid] = lock_holders(client.socket_path.with_suffix(".lock"))
    return pid


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def heard_it(text: str) -> bool:
    """The note's words, as far as a small model hears a synthetic voice."""
    return sum(word in text.lower() for word in ("reservar", "mesa", "viernes")) >= 2


def test_workers_in_several_processes_share_one_transcriber_that_yields_to_the_webhooks(
        whisper_model: Path, run_dir: Path, note: bytes, tmp_path: Path) -> None:
    note_file = tmp_path / "note.ogg"
    note_file.write_bytes(note)
    worker = (f"import sys; from pathlib import Path; from twilio_bridge.logs import configure_logging; configure_logging(); "
              f"from twilio_bridge.whatsapp.hearing import HostTranscriber; "
              f"print(HostTranscriber({str(whisper_model)!r}, 'es', directory=Path({str(run_dir)!r}))"
              f".transcribe(Path({str(note_file)!r}).read_bytes()).text); sys.stdin.read()")
    others = [subprocess.Popen([sys.executable, "-c", worker], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True) for _ in range(2)]
    try:
        client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
        assert heard_it(client.transcribe(note).text)
        for other in others:  # each a worker of its own, all three started at once
            assert heard_it(line_from(other))
        transcriber = the_transcriber(client)  # one process holds the host's lock, and answered all three
        assert niceness(transcriber) == niceness(os.getpid()) + NICENESS
        assert [path.name for path in run_dir.iterdir() if path.is_socket()] == [client.socket_path.name]
    finally:
        for other in others:
            other.communicate("", timeout=30)


def test_under_gunicorn_the_workers_hold_no_model_and_one_transcriber_hears_them_all(
        whisper_model: Path, note: bytes, tmp_path: Path, run_dir: Path, standin: RasaStandIn,
        fake_api: FakeTwilioAPI) -> None:
    port = free_port()
    env = {"RASA_WEBHOOK_URL": standin.webhook_url, "TWILIO_ACCOUNT_SID": fake_api.account_sid,
           "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_WHATSAPP_FROM": WHATSAPP_FROM,
           "TWILIO_API_BASE_URL": fake_api.base_url, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}", "FALLBACK_PHONE_NUMBER": HUMAN,
           "WHATSAPP_TRANSCRIBE": "on", "WHATSAPP_TRANSCRIBE_MODEL": str(whisper_model),
           "GUNICORN_WORKERS": "3", "GUNICORN_THREADS": "8", "TMPDIR": str(run_dir)}
    with Gunicorn(env, tmp_path, port) as bridge:
        users = [WhatsAppUser(bridge.url, AUTH_TOKEN, number=f"+52155{n:08d}") for n in range(6)]
        notes = [threading.Thread(target=user.send, kwargs={"media": ((fake_api.add_media(note, "audio/ogg"),
                                                                       "audio/ogg"),)}) for user in users]
        for sending in notes:  # at once: each worker that takes one needs the transcriber
            sending.start()
        for sending in notes:
            sending.join()
        for user in users:
            fake_api.wait_for(1, to=user.address, timeout=HEARD_WAIT)
        assert len(standin.received) == 6 and all(heard_it(asked["message"]) for asked in standin.received)
        workers = [int(pid) for pid in Path(f"/proc/{bridge.process.pid}/task/{bridge.process.pid}/children")
                   .read_text().split()]
        [lock] = run_dir.rglob("*.lock")
        [transcriber] = lock_holders(lock)  # others started in the race leave without loading anything
        started_by = int(Path(f"/proc/{transcriber}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert len(workers) == 3 and started_by in workers
        assert all(resident_mb(worker) < 150 for worker in workers)  # the model alone is some 230 MB
        assert resident_mb(transcriber) > 200


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_a_transcriber_started_by_a_delivery_thread_is_as_nice_as_any(whisper_model: Path, run_dir: Path,
                                                                      note: bytes) -> None:
    """A delivery thread runs nicer than its worker (defer_to_webhooks): the transcriber it starts takes the
    worker's niceness plus its own, not the thread's, which would leave it at the bottom of the scale."""
    client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
    heard: list[str] = []

    def deliver() -> None:
        defer_to_webhooks()
        heard.append(client.transcribe(note).text)

    thread = threading.Thread(target=deliver)
    thread.start()
    thread.join(120)
    assert heard and heard_it(heard[0])
    assert niceness(the_transcriber(client)) == niceness(os.getpid()) + NICENESS


def test_a_second_transcriber_leaves_the_first_alone(whisper_model: Path, run_dir: Path, note: bytes) -> None:
    client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
    assert heard_it(client.transcribe(note).text)
    first, listening = the_transcriber(client), client.socket_path.stat().st_ino
    second = subprocess.run(
        [sys.executable, "-m", "twilio_bridge.whatsapp.hearing", "--socket", str(client.socket_path),
         "--model", str(whisper_model), "--parent", str(os.getpid())], cwd=ROOT, capture_output=True, text=True,
        timeout=60)
    assert second.returncode == 0 and "whatsapp.transcriber.another_runs" in second.stderr
    assert the_transcriber(client) == first and client.socket_path.stat().st_ino == listening
    assert heard_it(client.transcribe(note).text)


def test_a_transcriber_killed_is_replaced_by_the_next_note(whisper_model: Path, run_dir: Path, note: bytes) -> None:
    client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
    assert heard_it(client.transcribe(note).text)
    killed = the_transcriber(client)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not alive(killed), 10)
    assert client.socket_path.exists()  # left behind, and refused: the next note starts another
    assert heard_it(client.transcribe(note).text)
    assert the_transcriber(client) != killed


def test_a_transcriber_ends_with_the_worker_that_started_it(whisper_model: Path, run_dir: Path, note: bytes) -> None:
    worker = (f"from pathlib import Path; from twilio_bridge.logs import configure_logging; configure_logging(); "
              f"from twilio_bridge.whatsapp.hearing import HostTranscriber; "
              f"from twilio_bridge.whatsapp.voice_notes import Unheard\n"
              f"try: HostTranscriber({str(whisper_model)!r}, 'es', directory=Path({str(run_dir)!r})).transcribe(b'no audio')\n"
              f"except Unheard as unheard: print(unheard.reason)\n"
              f"input()")
    client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
    with subprocess.Popen([sys.executable, "-c", worker], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as other:
        assert line_from(other) == "undecodable"  # answered by the transcriber it started
        started = the_transcriber(client)
        other.communicate("\n", timeout=30)
    wait_for(lambda: not alive(started), 10)
    assert not client.socket_path.exists()


class PlaysTranscriber:
    """Plays a transcriber whose connections end, one after the other, as `ends` says: "queued" (closed
    before it started on the note), "hearing" (closed after HEARING), then it answers every note."""

    def __init__(self, path: Path, ends: list[str]):
        self.ends, self.connections = list(ends), 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed by the test
                return
            with connection:
                self.connections += 1
                connection.recv(AUDIO_LENGTH.size)
                end = self.ends.pop(0) if self.ends else "answer"
                if end != "queued":
                    connection.sendall(HEARING)
                if end == "answer":
                    answer = json.dumps({"text": "perdí mi tarjeta", "language": "es", "seconds": 1.5, "took": 0.4})
                    connection.sendall(ANSWER_LENGTH.pack(len(answer)) + answer.encode())


def test_a_note_queued_when_its_transcriber_ended_is_sent_again_at_no_cost(run_dir: Path) -> None:
    client = HostTranscriber("base", "es", directory=run_dir)
    played = PlaysTranscriber(client.socket_path, ["queued", "queued", "queued", "hearing", "queued"])
    assert client.transcribe(b"OggS" * 1000).text == "perdí mi tarjeta"
    assert played.connections == 6  # one end while hearing is allowed, and queued ends do not count
    played.listener.close()


def test_a_note_whose_transcriber_ended_hearing_it_is_sent_once_more_then_the_engine_has_failed(run_dir: Path) -> None:
    client = HostTranscriber("base", "es", directory=run_dir)
    played = PlaysTranscriber(client.socket_path, ["queued", "hearing", "queued", "hearing"])
    with pytest.raises(Unheard) as unheard:
        client.transcribe(b"OggS" * 1000)
    assert unheard.value.reason == "engine" and "ended twice" in unheard.value.detail
    assert played.connections == 4  # not a fifth time
    played.listener.close()


def test_a_model_that_cannot_load_is_the_engines_failure_note_after_note(run_dir: Path, note: bytes,
                                                                         tmp_path: Path) -> None:
    client = HostTranscriber(str(tmp_path / "no-such-model"), "es", directory=run_dir)
    for _ in range(2):  # the transcriber stays, and tries the model again for the next note
        with pytest.raises(Unheard) as unheard:
            client.transcribe(note)
        assert unheard.value.reason == "engine" and "loading" in unheard.value.detail
    assert alive(the_transcriber(client))


def test_a_socket_directory_others_may_enter_is_refused_even_with_a_listener_in_it(run_dir: Path, note: bytes) -> None:
    shared = run_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # made by someone else before the bridge, who now listens where the socket goes
    client = HostTranscriber("base", "es", directory=shared)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as impostor:
        impostor.bind(str(client.socket_path))
        impostor.listen()
        impostor.setblocking(False)
        with pytest.raises(Unheard) as unheard:
            client.transcribe(note)
        assert unheard.value.reason == "engine" and str(shared) in unheard.value.detail
        with pytest.raises(BlockingIOError):
            impostor.accept()  # never connected to
    assert [path.name for path in shared.iterdir()] == [client.socket_path.name]  # no transcriber started


@pytest.mark.skipif(os.getuid() != 0, reason="listening as another user needs root")
def test_a_listener_of_another_user_is_sent_nothing(run_dir: Path, note: bytes) -> None:
    client = HostTranscriber("base", "es", directory=run_dir)
    impostor = ("import os, socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
                "os.setgid(65534); os.setuid(65534); s.listen(); print('listening', flush=True); "
                "c, _ = s.accept(); c.settimeout(30); print(len(c.recv(1 << 20)), flush=True)")
    with subprocess.Popen([sys.executable, "-c", impostor, str(client.socket_path)], stdout=subprocess.PIPE,
                          text=True) as listener:
        assert line_from(listener) == "listening"  # bound in the user's directory, then given to nobody
        with pytest.raises(Unheard) as unheard:
            client.transcribe(note)
        assert unheard.value.reason == "engine" and "another user's (uid 65534)" in unheard.value.detail
        assert line_from(listener) == "0"  # connected to, and sent nothing


def test_a_transcriber_that_cannot_start_is_the_engines_failure_at_once(run_dir: Path, note: bytes) -> None:
    client = HostTranscriber("base", "es", directory=run_dir)
    client.socket_path.with_suffix(".lock").mkdir()  # the lock cannot be opened
    with pytest.raises(Unheard) as unheard:
        client.transcribe(note)
    assert unheard.value.reason == "engine" and "exited with 1" in unheard.value.detail


def test_a_transcriber_whose_socket_was_removed_gives_way_to_a_new_one(whisper_model: Path, run_dir: Path,
                                                                       note: bytes) -> None:
    client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
    assert heard_it(client.transcribe(note).text)
    first = the_transcriber(client)
    client.socket_path.unlink()  # a cleaner of the temporary directory
    assert heard_it(client.transcribe(note).text)
    assert the_transcriber(client) != first
    wait_for(lambda: not alive(first), 10)


def line_from(process: subprocess.Popen[str], seconds: float = HEARD_WAIT) -> str:
    """The next line `process` prints, failing after `seconds` rather than waiting for ever."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], seconds)
    assert readable, f"nothing printed in {seconds} s"
    return process.stdout.readline().strip()


def test_a_note_bigger_than_whatsapp_allows_is_refused_unread(whisper_model: Path, run_dir: Path, note: bytes) -> None:
    client = HostTranscriber(str(whisper_model), "es", directory=run_dir)
    assert heard_it(client.transcribe(note).text)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(str(client.socket_path))
        connection.sendall(AUDIO_LENGTH.pack(1 << 40))
        assert connection.recv(len(HEARING)) == HEARING
        size = ANSWER_LENGTH.unpack(connection.recv(ANSWER_LENGTH.size))[0]
        assert json.loads(connection.recv(size))["unheard"] == "too_big"


def test_a_socket_path_too_long_for_unix_is_the_engines_failure(run_dir: Path, note: bytes) -> None:
    deep = run_dir / ("d" * 120)  # $TMPDIR set to a deep directory: a socket's path is at most 107 bytes
    deep.mkdir(mode=0o700)
    with pytest.raises(Unheard) as unheard:
        HostTranscriber("base", "es", directory=deep).transcribe(note)
    assert unheard.value.reason == "engine" and str(deep) in unheard.value.detail
