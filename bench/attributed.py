"""Scoring speaker-attributed transcripts of conversations against their manifests: DER
(metrics.der, 0.25 s collar) and cpWER (metrics.cp_wer), per recording and pooled.

Pooled means summed over recordings before dividing: DER is the missed, false-alarm and
confused seconds of all recordings over all their reference speech, cpWER all word errors
over all reference words. An average of per-recording rates would instead weigh a short
recording as much as a long one.
"""

from __future__ import annotations

from polyhead.metrics import DER_COLLAR_S, cp_wer, der, normalize_text

DER_PARTS = ("miss", "false_alarm", "confusion")


def text_by_speaker(items) -> dict[str, str]:
    """(start, speaker, text) items -> each speaker's text concatenated in time order."""
    out: dict[str, str] = {}
    for _, speaker, text in sorted(items, key=lambda item: item[0]):
        out[speaker] = (out.get(speaker, "") + " " + text).strip()
    return out


def reference_of(cut) -> tuple[list, dict]:
    """(turns [(start, end, speaker)], text by speaker) of a conversation's supervisions."""
    sups = cut.supervisions
    return ([(s.start, s.end, s.speaker) for s in sups],
            text_by_speaker((s.start, s.speaker, s.text) for s in sups))


def hypothesis_of(segments: list[dict]) -> tuple[list, dict]:
    """The same of a transcript's segments ({start, end, speaker, text})."""
    return ([(s["start"], s["end"], s["speaker"]) for s in segments],
            text_by_speaker((s["start"], s["speaker"], s["text"]) for s in segments))


def words(text_by: dict[str, str]) -> int:
    return sum(len(normalize_text(t).split()) for t in text_by.values())


def score_recording(cut, segments: list[dict], collar: float = DER_COLLAR_S) -> dict:
    """DER (with its parts and reference speech seconds) and cpWER of one recording, plus the
    word counts that pooling needs."""
    ref_turns, ref_text = reference_of(cut)
    hyp_turns, hyp_text = hypothesis_of(segments)
    ref_words = words(ref_text)
    cp = cp_wer(ref_text, hyp_text)
    # cp_wer is errors / reference words; with no reference words every hypothesis word is an error
    errors = round(cp * ref_words) if ref_words else words(hyp_text)
    return {**der(ref_turns, hyp_turns, collar=collar), "cpwer": cp, "cp_errors": errors,
            "ref_words": ref_words}


def pool(scores: list[dict]) -> dict:
    """Pooled DER, its parts and cpWER over recordings scored by score_recording."""
    speech = sum(s["ref_speech"] for s in scores)
    ref_words = sum(s["ref_words"] for s in scores)
    parts = {k: sum(s[k] * s["ref_speech"] for s in scores) for k in DER_PARTS}  # seconds
    rate = lambda errors, total: errors / total if total else (0.0 if not errors else float("inf"))  # noqa: E731
    return {"der": rate(sum(parts.values()), speech), **{k: rate(v, speech) for k, v in parts.items()},
            "ref_speech": speech, "cpwer": rate(sum(s["cp_errors"] for s in scores), ref_words),
            "ref_words": ref_words, "recordings": len(scores)}
