"""Rasa Open Source 3.6 for the tests and the benchmarks: the environment `./install_twilio_server.sh --dev`
prepares (.venv-rasa-oss), rasa_project/ trained once per content, and its servers (Rasa and the action
server), each in its own process group so that stopping it stops its children too."""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.servers import ROOT, free_port, stop_group, wait_for

VENV = ROOT / ".venv-rasa-oss"
PROJECT = ROOT / "rasa_project"
# The installer writes here, in one line, why it could not prepare Rasa Open Source (no Python 3.8–3.10).
UNAVAILABLE = VENV / "UNAVAILABLE"
# Trained models, named by the hash of what training reads: a second run with the same project does not retrain.
MODEL_CACHE = VENV / "models"
TRAINING_INPUTS = ("config.yml", "domain.yml", "data")
TRAIN_TIMEOUT = 900
START_TIMEOUT = 180


def unavailable_here() -> str | None:
    """The installer's one line when this machine has no Python for Rasa Open Source, else None."""
    return UNAVAILABLE.read_text(encoding="utf-8").strip() if UNAVAILABLE.exists() else None


def not_installed() -> str | None:
    """What to do when Rasa Open Source could be installed but is not, else None."""
    if (VENV / "bin" / "rasa").exists():
        return None
    return f"{VENV / 'bin' / 'rasa'} is missing: run ./install_twilio_server.sh --dev"


def environment(card_db: Path) -> dict[str, str]:
    """Rasa's and the action server's environment: no telemetry, and the demo card store at `card_db`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CARD_SERVICE_", "RASA_"))}
    env.update(RASA_TELEMETRY_ENABLED="false", CARD_SERVICE_DB=str(card_db), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def training_hash(project: Path = PROJECT) -> str:
    digest = hashlib.sha256()
    for version in sorted(VENV.glob("lib/python*/site-packages/rasa/version.py")):
        digest.update(version.read_bytes())  # another Rasa trains another model
    for name in TRAINING_INPUTS:
        path = project / name
        for file in sorted(path.rglob("*.yml")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(project)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def trained_model(log: Path, project: Path = PROJECT) -> tuple[Path, float | None]:
    """The model of `project` as it is now, and the seconds `rasa train` took (None when it came from the cache)."""
    model = MODEL_CACHE / f"{training_hash(project)}.tar.gz"
    if model.exists():
        return model, None
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODEL_CACHE) as out, open(log, "ab") as output:
        started = time.monotonic()
        subprocess.run(
            [str(VENV / "bin" / "rasa"), "train", "--out", out, "--fixed-model-name", "model"],
            cwd=project, env=environment(Path(out) / "cards.db"), stdout=output, stderr=subprocess.STDOUT,
            timeout=TRAIN_TIMEOUT, check=True, start_new_session=True)
        seconds = time.monotonic() - started
        os.replace(Path(out) / "model.tar.gz", model)  # whole or not at all, for a run stopped halfway
    return model, seconds


class GroupServer:
    """A command in a process group of its own, started until `ready_path` answers, stopped with its children."""

    def __init__(self, command: list[str], port: int, ready_path: str, log: Path, cwd: Path,
                 env: Mapping[str, str]):
        self.command, self.port, self.ready_path, self.log, self.cwd, self.env = \
            command, port, ready_path, log, cwd, dict(env)
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> GroupServer:
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self.ready, timeout, self.process, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        return requests.get(self.url + self.ready_path, timeout=2).ok

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None

    def __enter__(self) -> GroupServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def action_server(workdir: Path, env: Mapping[str, str], port: int | None = None) -> GroupServer:
    """rasa_project's actions under rasa-sdk 3.6, from the Rasa environment (as a Rasa 3.6 user runs them)."""
    port = port or free_port()
    return GroupServer([str(VENV / "bin" / "python"), "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
                       port, "/health", workdir / f"actions-{port}.log", PROJECT, env)


def rasa_server(workdir: Path, model: Path, actions_url: str, env: Mapping[str, str]) -> GroupServer:
    """`rasa run --enable-api` with `model`, its REST channel and the action server at `actions_url`."""
    port = free_port()
    endpoints = workdir / f"endpoints-{port}.yml"
    endpoints.write_text(f'action_endpoint:\n  url: "{actions_url}/webhook"\n')
    return GroupServer(
        [str(VENV / "bin" / "rasa"), "run", "--enable-api", "--model", str(model), "--interface", "127.0.0.1",
         "--port", str(port), "--endpoints", str(endpoints), "--credentials", str(PROJECT / "credentials.yml")],
        port, "/status", workdir / f"rasa-{port}.log", PROJECT, env)


@contextmanager
def real_assistant(workdir: Path) -> Iterator[tuple[GroupServer, GroupServer, float | None]]:
    """The trained assistant served: (rasa, action server, seconds of training or None if cached)."""
    workdir.mkdir(parents=True, exist_ok=True)
    model, train_seconds = trained_model(workdir / "train.log")
    env = environment(workdir / "cards.db")
    with action_server(workdir, env) as actions, rasa_server(workdir, model, actions.url, env) as rasa:
        yield rasa, actions, train_seconds
