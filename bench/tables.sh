#!/usr/bin/env bash
# The paper-table sweeps (configs/bench: pretrained Whisper base on the demo corpus). Run it in two terminals (or `bash bench/tables.sh &`
# twice) to use two workers: the sweeps lock each run, so workers share them. The second worker
# (WORKER=2) takes the sweeps in reverse order so the two meet only once.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
sweeps=(paper1_table1 surgery paper1_table3 paper1_table2 paper2_tables)
[ "${WORKER:-1}" = 2 ] && sweeps=(paper2_tables paper1_table2 paper1_table3 surgery paper1_table1)
for s in "${sweeps[@]}"; do
  .venv/bin/polyhead sweep configs/bench/$s.sweep.yaml --out runs/bench/$s
done
