"""The untrained speaker baseline every trial list is reported with.

Mean and standard deviation of MFCCs per utterance, scored by cosine similarity. If this
already verifies speakers well, the trial list is too easy to say anything about a model.
"""

from __future__ import annotations

import numpy as np

from ..audio import SAMPLE_RATE
from .corpus import Trial
from ..metrics import eer

N_CEPS = 20


def mfcc_stats(samples: np.ndarray) -> np.ndarray:
    import kaldi_native_fbank as knf

    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.num_ceps = N_CEPS
    opts.mel_opts.num_bins = 40
    m = knf.OnlineMfcc(opts)
    m.accept_waveform(SAMPLE_RATE, (samples * 32768.0).tolist())
    m.input_finished()
    feats = np.stack([m.get_frame(i) for i in range(m.num_frames_ready)])
    return np.concatenate([feats.mean(axis=0), feats.std(axis=0)])


def mfcc_baseline_eer(cuts, trials: list[Trial]) -> float | None:
    """EER of the MFCC baseline, or None when the list lacks targets or non-targets."""
    if len({t.target for t in trials}) < 2:
        return None
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    emb = {}
    for cut in cuts:
        if cut.id in needed:
            v = mfcc_stats(cut.load_audio()[0])
            emb[cut.id] = v / (np.linalg.norm(v) + 1e-9)
    scores = [float(emb[t.enrol] @ emb[t.test]) for t in trials]
    return round(float(eer(np.array(scores), np.array([t.target for t in trials]))[0]), 4)
