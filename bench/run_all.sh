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
[ -f corpora/demo/corpus.json ] || $PH synth --preset demo --out corpora/demo
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
