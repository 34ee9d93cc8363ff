#!/usr/bin/env bash
# Trains the paper-table runs (configs/bench: pretrained Whisper tiny.en on the demo corpus) and
# scores each on the test sets as soon as it finishes (bench/tables.py --score), most telling
# rows first, so a budget that stops early still leaves whole rows. Two workers share the queue:
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
queue=(
  paper1_table1:stl_speech paper1_table1:mtl_3s_dynamic paper1_table1:stl_speaker_3s
  paper1_table1:mtl_9s_dynamic paper1_table1:mtl_3s_static_0.88 paper1_table1:mtl_3s_static_0.5
  paper1_table1:stl_speaker_9s paper1_table1:mtl_9s_static_0.5 paper1_table1:mtl_9s_static_0.88
  paper1_table3:base__shared_layers=0 paper1_table3:base__shared_layers=2
  paper2_tables:joint paper2_tables:mean_mid_2s paper2_tables:disjoint_2s
  paper1_table2:split_192 paper1_table2:ctc_blanks paper1_table2:first_cls
  surgery:pcgrad surgery:uncertainty
  paper2_tables:ecapa_mid_2s paper2_tables:ecapa_last_2s paper2_tables:disjoint_10s
  paper2_tables:first_mid_2s paper2_tables:ecapa_mid_10s
  paper1_table3:base__shared_layers=1 paper1_table3:base__shared_layers=3
  paper1_table2:split_96 paper1_table2:split_288 paper1_table2:ctc_nonblanks
  surgery:cagrad surgery:upgrad
)
claims=runs/bench/.claims
mkdir -p "$claims"
for item in "${queue[@]}"; do
  sweep=${item%%:*} name=${item#*:}
  mkdir "$claims/$item" 2>/dev/null || continue  # the other worker has it
  echo "== $(date +%T) $sweep/$name"
  .venv/bin/polyhead sweep "configs/bench/$sweep.sweep.yaml" --out "runs/bench/$sweep" --only "$name"
  .venv/bin/python bench/tables.py --score "runs/bench/$sweep/$name" --speech-limit "$LIMIT"
done
