"""The pretrained peers that more than one benchmark runs (bench/peers.py per task,
bench/pipeline_peer.py as one stack), each built exactly once here so both measure the same
thing. Every factory imports its package on call: an ImportError means "not installed"
(`bash bench/install_peers.sh`). Inputs are 16 kHz mono float samples.
"""

from __future__ import annotations

import numpy as np

from polyhead.audio import SAMPLE_RATE

INSTALL_HINT = "install the peers with: bash bench/install_peers.sh"


def resemblyzer_embedder():
    """samples -> resemblyzer's 256-dim utterance embedding (unit length)."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)
    # preprocess_wav is the package's own front end (volume normalisation, silence trimming).
    return lambda samples: encoder.embed_utterance(preprocess_wav(samples, source_sr=SAMPLE_RATE))


def silero_segmenter(**options):
    """samples -> speech segments [(start s, end s)] from silero-vad; ``options`` go to its
    get_speech_timestamps (none: the package's defaults, threshold 0.5)."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad()  # the JIT model inside the wheel

    def segments(samples: np.ndarray) -> list[tuple[float, float]]:
        # Sample indices, not return_seconds: that rounds boundaries to 0.1 s.
        with torch.no_grad():
            found = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(samples)), model,
                                          sampling_rate=SAMPLE_RATE, **options)
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in found]
    return segments
