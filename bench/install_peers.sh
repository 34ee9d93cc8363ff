#!/usr/bin/env bash
# The pretrained peers of bench/peers.py and bench/pipeline_peer.py (faster-whisper through
# polyhead[zeroshot], silero-vad, resemblyzer, webrtcvad, pocketsphinx), into .venv, with torch
# held at the pinned CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=.venv/bin/pip
$PIP install -q -c constraints.txt -e ".[peers]"
# --no-deps: resemblyzer's metadata pulls `typing` and the source-only `webrtcvad`; what it
# really imports (torch, librosa, webrtcvad from webrtcvad-wheels, scipy) is installed above.
$PIP install -q -c constraints.txt --no-deps "resemblyzer==0.1.4"
