#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this): set up every extra, fetch the cached real
# test weights and clips up front, then run the whole suite offline. Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export NIX_CONFIG="${NIX_CONFIG:-$'experimental-features = nix-command flakes\nsubstituters ='}"

started=$SECONDS
bash scripts/setup.sh --extras whisper,server,dev,nemo
# Services the tests run for real: redis-server (registry, job queues) and chromium (web console).
bash scripts/system-packages.sh redis-server:redis-server chromium:chromium
echo "test phase=setup seconds=$((SECONDS - started))"

started=$SECONDS
"$PYTHON" -m tests.fixtures.assets --all
echo "test phase=assets seconds=$((SECONDS - started))"

started=$SECONDS
# Tiny real NeMo checkpoints (trained on CPU, cached by recipe hash) built up front, not inside a test.
"$PYTHON" -m tests.fixtures.nemo_models
echo "test phase=nemo_models seconds=$((SECONDS - started))"

started=$SECONDS
status=0
# A per-test ceiling so one hung test cannot eat the CI budget (pytest-timeout, from the dev extra).
"$PYTHON" -m pytest -q --timeout "${DALSTON_TEST_TIMEOUT:-900}" "$@" || status=$?
echo "test phase=pytest seconds=$((SECONDS - started)) exit=$status"
if [[ $status == 5 ]]; then
  echo "test: error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
