"""What the operations tests start for real: nginx with the shipped site, certificates, pebble."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3.util.connection

from tests.servers import ROOT, free_port, port_open, running

DOMAIN = "ivr.test"
RENDER_SITE = ROOT / "nginx" / "render-site.sh"


def _find(command: str) -> str | None:
    return shutil.which(command) or next(
        (str(p) for p in (Path("/usr/sbin") / command, Path("/sbin") / command) if p.exists()), None)


@functools.cache
def require_command(command: str, package: str) -> str:
    """The path of a system command; as root, apt-get installs its package when missing, else the test skips."""
    found = _find(command)
    if not found:
        apt_install(package)
        found = _find(command)
    if not found:
        pytest.skip(f"{package} is installed but has no {command}")
    return found


@functools.cache
def require_package(package: str, installs: str) -> None:
    """Like require_command, for a package known by a path it installs (a plugin, not a command)."""
    if not Path(installs).exists():
        apt_install(package)


def apt_install(package: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{package} is not installed (apt-get install {package}, or ./install_twilio_server.sh --dev as root)")
    quiet = {"env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, "capture_output": True, "text": True}
    install = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], **quiet)
    if install.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], **quiet)
        install = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], **quiet)
    if install.returncode != 0:
        pytest.skip(f"apt-get could not install {package}: {install.stderr.strip()[-300:]}")


def self_signed(directory: Path, *names: str, ip: str | None = None) -> tuple[Path, Path]:
    """A throwaway certificate and key for `names` (openssl), usable as its own trust anchor."""
    openssl = require_command("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    san = ",".join([f"DNS:{name}" for name in names] + ([f"IP:{ip}"] if ip else []))
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@dataclass(frozen=True)
class SiteVariables:
    """The template's variables; production defaults are in nginx/render-site.sh."""
    upstream: str
    http_port: int
    https_port: int
    letsencrypt_dir: Path
    acme_root: Path

    def environment(self) -> dict[str, str]:
        return {
            "BRIDGE_UPSTREAM": self.upstream,
            "HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "LETSENCRYPT_DIR": str(self.letsencrypt_dir),
            "ACME_ROOT": str(self.acme_root),
        }


def render_site(domain: str = DOMAIN, overrides: Mapping[str, str] | None = None) -> str:
    """The site exactly as an operator renders it: `nginx/render-site.sh DOMAIN`."""
    require_command("envsubst", "gettext-base")
    result = subprocess.run(["sh", str(RENDER_SITE), domain], env={**os.environ, **(overrides or {})},
                            capture_output=True, text=True, check=True)
    return result.stdout


def main_conf(directory: Path, sites: Path) -> Path:
    """A minimal nginx.conf that includes the site files, with every path inside `directory`."""
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / temp).mkdir(parents=True, exist_ok=True)
    # Workers must read files the test made under its private temporary directory.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {directory}/access.log;\n"
        + "".join(f"    {temp}_temp_path {directory}/{temp};\n".replace("body_temp", "client_body_temp")
                  for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    include {sites}/*.conf;\n"
        "}\n")
    return conf


class Nginx:
    """nginx with its own prefix, config and logs under `directory`."""

    def __init__(self, directory: Path):
        self.binary = require_command("nginx", "nginx")
        self.directory = directory
        self.sites = directory / "sites"
        self.sites.mkdir(parents=True, exist_ok=True)
        self.conf = main_conf(directory, self.sites)

    def command(self, *args: str) -> list[str]:
        return [self.binary, "-p", str(self.directory), "-c", str(self.conf), "-e", str(self.directory / "error.log"),
                *args]

    def test(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True)

    def reload(self) -> None:
        subprocess.run(self.command("-s", "reload"), check=True, capture_output=True)

    @contextmanager
    def running(self, *ports: int) -> Iterator[None]:
        with running(self.command("-g", "daemon off;"), self.directory / "nginx.out",
                     ready=lambda: all(port_open(port) for port in ports), timeout=15):
            yield


@contextmanager
def resolve_to_localhost(domain: str = DOMAIN) -> Iterator[None]:
    """Within this process, `domain` resolves to 127.0.0.1 for requests/urllib3 (SNI, Host, checks stay real)."""
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        host, port = address
        return real(("127.0.0.1" if host == domain else host, port), *args, **kwargs)

    urllib3.util.connection.create_connection = create_connection
    try:
        yield
    finally:
        urllib3.util.connection.create_connection = real


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    ca_bundle: Path  # trusts pebble's own HTTPS listener (for certbot, via REQUESTS_CA_BUNDLE)
    management_url: str


@contextmanager
def pebble(workdir: Path, http_port: int) -> Iterator[Pebble]:
    """Debian's pebble ACME server; it resolves every name to 127.0.0.1 through pebble-challtestsrv's DNS
    and validates http-01 challenges on `http_port`."""
    binary = require_command("pebble", "pebble")
    challtestsrv = require_command("pebble-challtestsrv", "pebble")
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(workdir / "listener", "localhost", ip="127.0.0.1")
    acme_port, management_port, dns_port, dns_management_port, tls_port = (free_port() for _ in range(5))
    config = workdir / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}))
    dns = [challtestsrv, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns_port}",
           "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management_port}"]
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    with running(dns, workdir / "challtestsrv.log", ready=lambda: port_open(dns_management_port)), \
         running([binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"], workdir / "pebble.log",
                 env=env, ready=lambda: port_open(acme_port) and port_open(management_port)):
        yield Pebble(f"https://127.0.0.1:{acme_port}/dir", cert, f"https://127.0.0.1:{management_port}")


def readme_gunicorn_command() -> list[str]:
    """The README's production command, `.venv/bin/gunicorn -c gunicorn.conf.py twilio_voice_server:app`,
    as argv with the program's bare name."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"\S*/gunicorn( -c \S+ \S+:app)", readme)
    assert found, "README.md shows no gunicorn command"
    return ["gunicorn", *found.group(1).split()]
