"""Zero-shot Whisper on the same test sets: what a user gets without polyhead.

faster-whisper (CTranslate2) runs the very files the pretrained encoder and decoder were
converted from, with Whisper's own 30 s window and faster-whisper's defaults, as a user
would run it (beam 5, temperature fallback when a transcript is too repetitive); only the
language is given. References and hypotheses are normalised alike (metrics.normalize_text).
Every 30 s window costs the same however short the clip, so the demo scores an evenly
spaced subset (``every``).
"""

from __future__ import annotations

from pathlib import Path

from ..audio import to_model_audio  # 16 kHz float: what faster-whisper takes as is
from .. import metrics
from ..data.labels import raw_text_of, text_of


def faster_whisper_model(ct2_folder: str | Path, threads: int = 2):
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise RuntimeError("zero-shot Whisper needs faster-whisper: pip install faster-whisper") from None
    return WhisperModel(str(ct2_folder), device="cpu", compute_type="float32", cpu_threads=threads)


def evaluate_zero_shot(model, cuts, language: str | None = "en", every: int = 1, beam_size: int = 1) -> dict:
    """WER/CER of faster-whisper's transcripts of every ``every``-th cut with a transcript.

    The search is polyhead evaluation's own (greedy at temperature 0, no timestamps, no
    fallback, no previous-text conditioning), so the two sides differ only in their weights;
    ``beam_size=5`` with faster-whisper's other defaults is what bench/parity.py adds."""
    cuts = [c for c in cuts if text_of(c)][::every]
    refs, hyps = [], []
    for cut in cuts:
        audio = cut.load_audio()
        samples = to_model_audio(audio.T if audio.ndim == 2 else audio, cut.sampling_rate, name=cut.id)
        segments, _ = model.transcribe(samples, language=language, beam_size=beam_size, temperature=0.0,
                                       without_timestamps=True, condition_on_previous_text=False)
        refs.append(raw_text_of(cut))
        hyps.append(" ".join(s.text.strip() for s in segments))
    from ..tasks.speech import asr_result

    return asr_result(refs, hyps)
