"""Zero-shot Whisper on the same test sets: what a user gets without polyhead.

faster-whisper (CTranslate2) runs the very files the pretrained encoder and decoder were
converted from, with Whisper's own 30 s window and faster-whisper's defaults, as a user
would run it (beam 5, temperature fallback when a transcript is too repetitive); only the
language is given (or, multilingual, detected; and Whisper's own translate task). References
and hypotheses are normalised alike (metrics.normalize_text).
Every 30 s window costs the same however short the clip, so the demo scores an evenly
spaced subset (``every``).
"""

from __future__ import annotations

from pathlib import Path

from ..audio import to_model_audio  # 16 kHz float: what faster-whisper takes as is
from .. import metrics
from ..data.corpus import label
from ..data.labels import raw_text_of, text_of


def faster_whisper_model(ct2_folder: str | Path, threads: int = 2):
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise RuntimeError("zero-shot Whisper needs faster-whisper: pip install faster-whisper") from None
    return WhisperModel(str(ct2_folder), device="cpu", compute_type="float32", cpu_threads=threads)


def _answer(model, cut, language: str | None, beam_size: int, task: str = "transcribe"):
    """faster-whisper's text of one cut and the language it says it heard (the forced one,
    or the language token it detected when ``language`` is None), with polyhead
    evaluation's search: greedy at temperature 0 (or a beam), no timestamps, no fallback,
    no previous-text conditioning."""
    audio = cut.load_audio()
    samples = to_model_audio(audio.T if audio.ndim == 2 else audio, cut.sampling_rate, name=cut.id)
    segments, info = model.transcribe(samples, language=language, task=task, beam_size=beam_size, temperature=0.0,
                                      without_timestamps=True, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments), info.language


def evaluate_zero_shot(model, cuts, language: str | None = "en", every: int = 1, beam_size: int = 1) -> dict:
    """WER/CER of faster-whisper's transcripts of every ``every``-th cut with a transcript.

    The search is polyhead evaluation's own (greedy at temperature 0, no timestamps, no
    fallback, no previous-text conditioning), so the two sides differ only in their weights;
    ``beam_size=5`` with faster-whisper's other defaults is what bench/parity.py adds."""
    from ..tasks.speech import asr_result

    cuts = [c for c in cuts if text_of(c)][::every]
    hyps = [_answer(model, cut, language, beam_size)[0] for cut in cuts]
    return asr_result([raw_text_of(c) for c in cuts], hyps)


def evaluate_zero_shot_multilingual(model, cuts, every: int = 1, beam_size: int = 1, detect: bool = True,
                                    translate: bool = True) -> dict:
    """Zero-shot Whisper on multilingual cuts (every ``every``-th with a transcript), with the
    search of ``evaluate_zero_shot``:

    - ``wer_by_language``: transcripts with each cut's own language given, WER/CER per
      language on that language's normaliser (tasks.speech.asr_by_language);
    - ``detect``: transcripts with the language left to Whisper (its language token after
      <|startoftranscript|>): ``language_accuracy`` (detected == the cut's language, overall
      and ``by_language``), ``detected`` (how often each code was written) and the WER of
      those transcripts (``wer_by_language_detected``);
    - ``translate``: ``task="translate"`` with the source language given, on the cuts with a
      reference translation (custom "translation"): BLEU/chrF (metrics.translation_scores),
      ``{"skipped": why}`` for an English-only model (it has no translate task)."""
    from ..tasks.speech import asr_by_language, language_id_result, language_of

    cuts = [c for c in cuts if text_of(c)][::every]
    languages = [language_of(c) for c in cuts]
    refs = [raw_text_of(c) for c in cuts]
    hyps = [_answer(model, c, lang, beam_size)[0] for c, lang in zip(cuts, languages)]
    result = {"n": len(cuts), "wer_by_language": asr_by_language(refs, hyps, languages), "language_accuracy": None}
    if detect and cuts:
        answers = [_answer(model, c, None, beam_size) for c in cuts]
        result.update(language_id_result(languages, [lang for _, lang in answers]))
        result["wer_by_language_detected"] = asr_by_language(refs, [text for text, _ in answers], languages)
    if translate:
        result["translate"] = _translate(model, cuts, beam_size)
    return result


def _translate(model, cuts, beam_size: int) -> dict:
    from ..tasks.speech import language_of, translation_result

    if not getattr(model, "is_multilingual", True):
        return {"skipped": "an English-only Whisper has no translate task"}
    cuts = [c for c in cuts if label(c, "translation")]
    languages = [language_of(c) for c in cuts]
    hyps = [_answer(model, c, lang, beam_size, task="translate")[0] for c, lang in zip(cuts, languages)]
    refs = [" ".join(label(c, "translation").split()) for c in cuts]
    return translation_result(refs, hyps, languages)
