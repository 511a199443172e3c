#!/usr/bin/env bash
# Set up dalston on a fresh machine: system tools (as root on Debian/Ubuntu), then the exact
# versions from poetry.lock with pip, then dalston itself (editable, so `dalston` is on PATH).
# Idempotent: a second run checks and exits in seconds.
#
#   scripts/setup.sh [--extras whisper,server[,dev][,nemo]] [--torch auto|cpu|cuda] [--no-system]
#
# Uses $PYTHON (default python3); run it inside a venv to keep the system Python untouched.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
extras="whisper,server"
system=1
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --extras) extras="$2"; shift 2 ;;
    --extras=*) extras="${1#*=}"; shift ;;
    --no-system) system=0; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

log() { echo "setup $*"; }

# pyproject.toml's requires-python (the lock is narrowed to it: docs/NIX.md, "The lock").
if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null; then
  echo "setup: error: $PYTHON is not Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# System tools: ffmpeg (audio), nix (flake outputs), jq, espeak-ng + sox (synthetic speech in tests).
if [[ $system == 1 ]]; then
  bash scripts/system-packages.sh ffmpeg:ffmpeg nix-instantiate:nix-bin jq:jq espeak-ng:espeak-ng sox:sox
fi

"$PYTHON" scripts/install.py --extras "$extras" "${pass[@]}"

# pyenv only makes shims for new console scripts on `pyenv rehash`.
if ! command -v dalston >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  pyenv rehash || true
fi
if ! command -v dalston >/dev/null 2>&1; then
  bindir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  log "warning=dalston_not_on_path fix='export PATH=$bindir:\$PATH' (or run: $PYTHON -m dalston.cli)"
fi
