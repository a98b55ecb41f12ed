#!/usr/bin/env bash
# Set up the bridge in this directory. Safe to run again: it only does what is missing.
#
#   ./install_twilio_server.sh            .venv with the pinned requirements; twilio.env from the example
#   ./install_twilio_server.sh --dev      the same, plus the tests' tools (test_requirements.txt) and the
#                                         system packages the tests start for real
#   ./install_twilio_server.sh --systemd  the same, then (as root) the service: user twilio-bridge,
#                                         /etc/systemd/system/twilio-bridge.service, enabled and started
#
# --systemd reads BRIDGE_USER (twilio-bridge), UNIT_DIR (/etc/systemd/system) and SYSTEMCTL (systemctl).
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
SYSTEMD=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --systemd) SYSTEMD=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install_twilio_server.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "install_twilio_server.sh: Python 3.11 or newer is required" >&2; exit 1; }
if [ "$SYSTEMD" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install_twilio_server.sh: --systemd must run as root (sudo)" >&2; exit 1
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
requirements=(twilio_requirements.txt)
[ "$DEV" = 0 ] || requirements+=(test_requirements.txt)
stamp=.venv/.requirements.sha256
wanted=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${requirements[@]/#/--requirement=}"
  echo "$wanted" > "$stamp"
fi

if [ ! -f twilio.env ]; then
  cp twilio.env.example twilio.env
  echo "install_twilio_server.sh: created twilio.env; set TWILIO_AUTH_TOKEN and the rest before starting"
fi

if [ "$DEV" = 1 ]; then
  missing=()
  # what:package, where what is a command or a path the package installs
  for pair in nginx:nginx redis-server:redis-server openssl:openssl envsubst:gettext-base certbot:certbot \
      /usr/lib/python3/dist-packages/certbot_nginx:python3-certbot-nginx pebble:pebble \
      docker-compose:docker-compose; do
    what=${pair%%:*}
    command -v "$what" >/dev/null || [ -x "/usr/sbin/$what" ] || [ -e "$what" ] || missing+=("${pair##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "install_twilio_server.sh: tests that need ${missing[*]} will be skipped (install them as root)" >&2
    fi
  fi
fi

# --- Rasa Open Source for the real-Rasa tests (--dev) --------------------------------------------------
# .venv-rasa-oss gets rasa_project/requirements-oss.txt, with the first Python 3.8–3.10 found (RASA_OSS_PYTHON
# names one). Without one, it says so in one line and leaves it in .venv-rasa-oss/UNAVAILABLE: the tests that
# need Rasa read that line and skip, saying why.
RASA_OSS_VENV=.venv-rasa-oss
RASA_OSS_REQUIREMENTS=rasa_project/requirements-oss.txt

rasa_oss_python_fits() {
  "$1" -c 'import sys, venv; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 10))' >/dev/null 2>&1
}

find_rasa_oss_python() {
  local candidate
  if [ -n "${RASA_OSS_PYTHON:-}" ]; then
    rasa_oss_python_fits "$RASA_OSS_PYTHON" && { echo "$RASA_OSS_PYTHON"; return; }
    echo "install_twilio_server.sh: RASA_OSS_PYTHON=$RASA_OSS_PYTHON is not a Python 3.8–3.10" >&2; exit 1
  fi
  # pyenv's shims on PATH may name a version that is not installed: the interpreters themselves come next.
  for candidate in python3.10 python3.9 python3.8 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 \
      "$HOME"/.pyenv/versions/3.9*/bin/python3.9 "$HOME"/.pyenv/versions/3.8*/bin/python3.8 \
      /usr/local/bin/python3.10 /usr/bin/python3.10; do
    command -v "$candidate" >/dev/null 2>&1 && rasa_oss_python_fits "$candidate" && { echo "$candidate"; return; }
  done
  return 0
}

install_rasa_oss() {
  local stamp=$RASA_OSS_VENV/.requirements.sha256 wanted python
  wanted=$(sha256sum "$RASA_OSS_REQUIREMENTS" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && [ -x "$RASA_OSS_VENV/bin/rasa" ]; then
    return
  fi
  python=$(find_rasa_oss_python)
  mkdir -p "$RASA_OSS_VENV"
  if [ -z "$python" ]; then
    echo "install_twilio_server.sh: no Python 3.8–3.10 for Rasa Open Source (set RASA_OSS_PYTHON):" \
      "the tests with real Rasa will be skipped" | tee "$RASA_OSS_VENV/UNAVAILABLE" >&2
    return
  fi
  rm -f "$RASA_OSS_VENV/UNAVAILABLE"
  [ -x "$RASA_OSS_VENV/bin/python" ] || "$python" -m venv "$RASA_OSS_VENV"
  echo "install_twilio_server.sh: installing Rasa Open Source into $RASA_OSS_VENV (about 2.7 GB; a few minutes)"
  "$RASA_OSS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --requirement="$RASA_OSS_REQUIREMENTS"
  echo "$wanted" > "$stamp"
}

[ "$DEV" = 0 ] || install_rasa_oss
# --- end of Rasa Open Source ------------------------------------------------------------------------------

install_service() {
  local dir user group unit_dir unit rendered systemctl
  dir=$(pwd -P)
  user=${BRIDGE_USER:-twilio-bridge}
  unit_dir=${UNIT_DIR:-/etc/systemd/system}
  systemctl=${SYSTEMCTL:-systemctl}
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$dir" --no-create-home --shell /usr/sbin/nologin "$user"
    echo "install_twilio_server.sh: created the system user $user"
  fi
  group=$(id -gn "$user")
  # The service reads twilio.env (secrets: not world-readable) and writes only state/.
  mkdir -p state
  chown -R "$user:$group" state
  chmod 750 state
  chown "root:$group" twilio.env
  chmod 640 twilio.env
  if command -v runuser >/dev/null && ! runuser -u "$user" -- test -x "$dir/.venv/bin/gunicorn"; then
    echo "install_twilio_server.sh: warning: $user cannot run $dir/.venv/bin/gunicorn;" \
      "install under a directory it can read, such as /opt/twilio-bridge" >&2
  fi

  rendered=$(sed -e "s|/opt/twilio-bridge|$dir|g" -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$group|" \
    deploy/twilio-bridge.service)
  unit=$unit_dir/twilio-bridge.service
  local changed=1
  if [ -f "$unit" ] && [ "$(cat "$unit")" = "$rendered" ]; then
    changed=0
    echo "install_twilio_server.sh: $unit is up to date"
  else
    mkdir -p "$unit_dir"
    printf '%s\n' "$rendered" > "$unit"
    echo "install_twilio_server.sh: installed $unit"
  fi

  if [ ! -d /run/systemd/system ] && [ -z "${SYSTEMCTL:-}" ]; then
    echo "install_twilio_server.sh: systemd is not running here; on the server: systemctl enable --now twilio-bridge"
    return
  fi
  [ "$changed" = 0 ] || "$systemctl" daemon-reload
  "$systemctl" enable twilio-bridge.service
  if ! grep -Eq '^TWILIO_AUTH_TOKEN=[^[:space:]]' twilio.env; then
    echo "install_twilio_server.sh: set TWILIO_AUTH_TOKEN (and PUBLIC_BASE_URL) in $dir/twilio.env," \
      "then: systemctl start twilio-bridge"
  elif [ "$changed" = 1 ]; then
    "$systemctl" restart twilio-bridge.service
  else
    "$systemctl" start twilio-bridge.service
  fi
}

if [ "$SYSTEMD" = 1 ]; then
  install_service
fi
