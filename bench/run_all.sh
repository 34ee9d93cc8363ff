#!/usr/bin/env bash
# Every benchmark, in order; each prints a table and writes JSON under bench/out/.
# Long: the bench corpus synthesis alone takes about 8 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PH=.venv/bin/polyhead
PY=.venv/bin/python
mkdir -p bench/out
[ -f corpora/bench/corpus.json ] || /usr/bin/time -v $PH synth --preset bench --out corpora/bench 2>&1 | tee bench/out/synth_bench.log
$PH data stats corpora/bench | tee bench/out/bench_stats.md
$PY bench/padding.py corpora/bench | tee bench/out/padding.md
# The papers' tables: every sweep fine-tunes pretrained Whisper tiny.en on the demo corpus
# (configs/bench/base.yaml; two workers sharing the runs), then test-set tables, Pareto/DET
# plots and the layer-wise probe
[ -f corpora/demo/corpus.json ] || $PH synth --preset demo --out corpora/demo
bash bench/tables.sh & bash bench/tables.sh; wait
OMP_NUM_THREADS=1 $PY bench/tables.py --speech-limit 160
OMP_NUM_THREADS=1 $PH probe runs/bench/paper1_table1/mtl_3s_dynamic --corpus corpora/demo --set speaker_test --plot docs/img/bench_probe.png
# The from-scratch conformer against transformers' wav2vec2 of the same size (bench corpus)
OMP_NUM_THREADS=1 $PY bench/arch_peers.py --corpus corpora/bench --steps 200
$PY bench/throughput.py --corpus corpora/demo | tee bench/out/throughput.md
$PH demo --corpus corpora/demo --run runs/demo | tee bench/out/demo.md
$PY bench/generalisation.py runs/demo/multitask | tee bench/out/generalisation.md
$PY bench/conversations.py runs/demo/multitask | tee bench/out/conversations.md
$PY bench/latency.py --run runs/demo/multitask --repeats 5
$PY bench/deploy.py --run runs/demo/multitask --limit 150
$PY bench/service.py --run runs/demo/multitask --seconds 60
$PY bench/load.py --run runs/demo/multitask
OMP_NUM_THREADS=1 $PY bench/fuzz.py --examples 10500
# Pretrained peers on the same test sets (resemblyzer, pocketsphinx, silero-vad, webrtcvad)
bash bench/install_peers.sh
$PY bench/peers.py corpora/demo --run runs/demo | tee bench/out/peers_demo.md
