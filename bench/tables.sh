#!/usr/bin/env bash
# Trains the paper-table runs (configs/bench: pretrained Whisper tiny.en on the demo corpus) and
# scores each on the test sets as soon as it finishes (bench/tables.py --score), in the
# order of the tables, so a budget that stops early still leaves whole rows. Two workers share the queue:
#
#   bash bench/tables.sh > /tmp/w1.log 2>&1 &  bash bench/tables.sh > /tmp/w2.log 2>&1 &
#
# A worker claims a run by creating runs/bench/.claims/<sweep>:<run>; after stopping the workers,
# `rm -r runs/bench/.claims` and start again: finished runs are skipped, half-done ones resume.
# Then `.venv/bin/python bench/tables.py --speech-limit 160` prints the tables from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
LIMIT=${SPEECH_LIMIT:-160}
mapfile -t queue < <(.venv/bin/python bench/tables.py --queue)  # sweep/run, table order
claims=runs/bench/.claims
mkdir -p "$claims"
for item in "${queue[@]}"; do
  sweep=${item%%/*} name=${item#*/}
  mkdir "$claims/$sweep:$name" 2>/dev/null || continue  # the other worker has it
  echo "== $(date +%T) $sweep/$name"
  .venv/bin/polyhead sweep "configs/bench/$sweep.sweep.yaml" --out "runs/bench/$sweep" --only "$name"
  .venv/bin/python bench/tables.py --score "runs/bench/$sweep/$name" --speech-limit "$LIMIT"
done
