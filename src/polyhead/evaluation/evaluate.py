"""`polyhead evaluate`: every head on the test sets, in-distribution and OOD side by side.

    ASR        WER / CER of the speech head's transcripts: Whisper's decoder (greedy), or
               greedy CTC (text normalised by metrics.normalize_text)
    speaker    EER and minDCF (P_target 0.01 and 0.05) of cosine scores of full-utterance
               embeddings on trial lists, next to the untrained MFCC baseline's EER
    language, intent   accuracy;   VAD   frame F1 on long recordings
    decoder tasks      (a Whisper decoder with decoder_tasks, results under "<task>/<decoder
               task>") slu: intent accuracy and slot F1 beside the intent head; language:
               accuracy of the language token beside the LID head; speakers: on the
               conversations, per window of at most the encoder's input, cpWER of the
               speaker-token transcript and DER of its turns timed by CTC alignment
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.corpus import available_sets, label, load_set, read_info, read_trials, trials_path
from ..model.decoder_tasks import LANGUAGE, SLU, SPEAKERS, TRANSCRIBE, parse_slu, parse_speakers
from ..model.heads import CTCHead
from ..training.data import Collator, FeatureCache, raw_text_of, speaker_windows, text_of
from .. import metrics

log = logging.getLogger(__name__)
EVAL_BATCH_SECONDS = 120.0


def batches_by_duration(cuts: list, max_seconds: float):
    cuts = sorted(cuts, key=lambda c: c.duration)
    batch = []
    for c in cuts:
        if batch and (len(batch) + 1) * c.duration > max_seconds:
            yield batch
            batch = []
        batch.append(c)
    if batch:
        yield batch


@torch.no_grad()
def predict(model, cuts, tasks: list[str], targets: list[str] = (), max_seconds: float = EVAL_BATCH_SECONDS,
            cache: FeatureCache | None = None):
    """Yield (cut, {task: per-utterance output}) for every cut, full length, no augmentation."""
    model.eval()
    device = next(model.parameters()).device
    cache = cache or FeatureCache(model.encoder.features, enabled=False)
    collate = Collator(model.config.vocab, list(targets), cache)
    for group in batches_by_duration(list(cuts), max_seconds):
        b = collate(group).to(device)
        out = model(b.inputs, b.lengths, tasks)
        for i, cut in enumerate(group):
            yield cut, {t: _row(o, i) for t, o in out.items()}


def _row(out: dict, i: int) -> dict:
    row = {}
    for k, v in out.items():
        if torch.is_tensor(v) and v.dim() > 0:
            row[k] = v[i]
        else:
            row[k] = v
    if "logits" in row and "lengths" in out:
        row["logits"] = row["logits"][: int(out["lengths"][i])]
    return row


def decode_ctc(logits: torch.Tensor, vocab: list[str]) -> str:
    ids = CTCHead.greedy({"logits": logits[None], "lengths": torch.tensor([len(logits)])})[0]
    return "".join(vocab[i - 1] for i in ids)


CLOSED_SLU = "closed_slu"  # transcribe_cuts: <|slu|> with the intent from the trained set


@torch.no_grad()
def transcribe_cuts(model, cuts, task: str, max_seconds: float = EVAL_BATCH_SECONDS,
                    decoder_task: str = TRANSCRIBE, with_output: bool = False):
    """Yield (cut, transcript) with the head's own decoding, one padded batch at a time.
    A Whisper decoder's other tasks: their text (greedy), or for ``language`` the language
    code; ``with_output`` adds the head's output row (CTC logits for alignment)."""
    model.eval()
    device = next(model.parameters()).device
    collate = Collator(model.config.vocab, [], FeatureCache(model.encoder.features, enabled=False))
    head = model.heads[task]
    for group in batches_by_duration(list(cuts), max_seconds):
        b = collate(group).to(device)
        out = model(b.inputs, b.lengths, [task])[task]
        if decoder_task == TRANSCRIBE:
            answers = head.transcribe(out, model.config.vocab.get("text"))
        elif decoder_task == LANGUAGE:
            answers = [r["language"] for r in head.detect_language(out["memory"], out["lengths"])]
        elif decoder_task == CLOSED_SLU:
            answers = [r["text"] for r in head.closed_slu(out["memory"], out["lengths"], model.config.vocab["intent"],
                                                          frames_per_second=out["frames_per_second"])]
        else:
            answers = [r["text"] for r in head.generate(out["memory"], out["lengths"], task=decoder_task,
                                                         frames_per_second=out["frames_per_second"])]
        if with_output:
            answers = [(a, _row(out, i)) for i, a in enumerate(answers)]
        yield from zip(group, answers)


def evaluate_asr(model, cuts, task: str, limit: int | None = None) -> dict:
    cuts = [c for c in cuts if text_of(c)][:limit]
    refs, hyps = [], []
    for cut, hyp in transcribe_cuts(model, cuts, task):
        refs.append(raw_text_of(cut))  # written form: the scorer normalises both sides
        hyps.append(hyp)
    return asr_result(refs, hyps)


def asr_result(refs: list[str], hyps: list[str]) -> dict:
    """WER/CER on Whisper's normalisation, and how well the written form (punctuation,
    case) is kept, from written references and raw hypotheses."""
    res = metrics.error_rates(refs, hyps)
    res.update(metrics.written_form(refs, hyps))
    res["normaliser"] = metrics.SCORING_NORMALISER
    res["n"] = len(refs)
    res["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]
    return res


def evaluate_slu(model, cuts, task: str, limit: int | None = None) -> dict:
    """Intent accuracy and slot F1 of the decoder's <|slu|> answers on the commands: with the
    intent chosen from the trained intents (``closed_slu``, what inference does), and written
    freely (``free_*``)."""
    cuts = [c for c in cuts if len(c.supervisions) == 1 and label(c, "intent")][:limit]
    if not cuts:
        return {}
    res = {"n": len(cuts)}
    ways = [("free_", SLU)] + ([("", CLOSED_SLU)] if model.config.vocab.get("intent") else [])
    for prefix, way in ways:
        refs, hyps = [], []
        for cut, text in transcribe_cuts(model, cuts, task, decoder_task=way):  # batched: its own order
            refs.append((label(cut, "intent"), label(cut, "slots") or {}))
            hyps.append(parse_slu(text))
        res[f"{prefix}intent_accuracy"] = metrics.accuracy([r[0] for r in refs], [h[0] for h in hyps])
        res[f"{prefix}slot_f1"] = metrics.slot_f1([r[1] for r in refs], [h[1] for h in hyps])
    res.setdefault("intent_accuracy", res["free_intent_accuracy"])
    res.setdefault("slot_f1", res["free_slot_f1"])
    return res


def evaluate_language_token(model, cuts, task: str, limit: int | None = None) -> dict:
    """Accuracy of the language token the decoder writes after <|startoftranscript|>."""
    cuts = [c for c in cuts if len(c.supervisions) == 1 and label(c, "language")][:limit]
    if not cuts:
        return {}
    refs, hyps = zip(*((label(cut, "language"), code)
                       for cut, code in transcribe_cuts(model, cuts, task, decoder_task=LANGUAGE)))
    return {"language_accuracy": metrics.accuracy(list(refs), list(hyps)), "n": len(refs)}


def evaluate_speaker_tokens(model, cuts, task: str) -> dict:
    """The <|speakers|> transcript on windows of long recordings (as the head reads them:
    at most the encoder's input): cpWER against the window's turns, and DER of the turns
    timed by aligning their words on the CTC head (none without one: no times)."""
    from ..ctc import word_times

    windows = [w for cut in cuts for w in speaker_windows(cut, model.encoder.max_input_seconds)]
    if not windows:
        return {}
    cpwers, ders = [], []
    for window, (text, out) in transcribe_cuts(model, windows, task, decoder_task=SPEAKERS, with_output=True):
        turns = parse_speakers(text)
        ref_text: dict[str, str] = {}
        for s in sorted(window.supervisions, key=lambda s: s.start):
            ref_text[s.speaker] = f"{ref_text.get(s.speaker, '')} {s.text}".strip()
        hyp_text: dict[int, str] = {}
        for n, t in turns:
            hyp_text[n] = f"{hyp_text.get(n, '')} {t}".strip()
        cpwers.append(metrics.cp_wer(ref_text, hyp_text))
        if "logits" in out:
            logp = out["logits"].float().log_softmax(-1).cpu().numpy()
            times = word_times(" ".join(t for _, t in turns), logp, model.config.vocab["text"],
                               out["frames_per_second"]) or []
            ref_turns = [(s.start, s.end, s.speaker) for s in window.supervisions]
            ders.append(metrics.der(ref_turns, _timed_turns(turns, times))["der"])
    return {"cpwer": float(np.mean(cpwers)), "der": float(np.mean(ders)) if ders else None, "windows": len(cpwers)}


def _timed_turns(turns: list[tuple[int, str]], times: list[dict]) -> list[tuple[float, float, int]]:
    """(start, end, speaker) per turn from the times of its words; none when the alignment failed."""
    from ..ctc import words_by_turn

    return [(mine[0]["start"], mine[-1]["end"], n) for n, mine in words_by_turn(turns, times) if mine]


def embeddings(model, cuts, task: str) -> dict[str, np.ndarray]:
    out = {}
    for cut, o in predict(model, cuts, [task]):
        e = o[task]["embedding"].float().cpu().numpy()
        out[cut.id] = e / (np.linalg.norm(e) + 1e-9)
    return out


def evaluate_trials(emb: dict[str, np.ndarray], trials) -> dict:
    scores = np.array([float(emb[t.enrol] @ emb[t.test]) for t in trials])
    labels = np.array([t.target for t in trials], dtype=int)
    eer, thr = metrics.eer(scores, labels)
    return {"eer": eer, "threshold": thr, "trials": len(trials),
            "min_dcf_0.01": metrics.min_dcf(scores, labels, p_target=0.01)[0],
            "min_dcf_0.05": metrics.min_dcf(scores, labels, p_target=0.05)[0],
            "scores": scores, "labels": labels}


def evaluate_speaker(model, corpus: str | Path, set_name: str, task: str, snorm=None,
                     threshold: float | None = None) -> dict:
    """EER and minDCF of a trial list's cosine scores. With ``snorm`` (an
    ``scoring.ScoreNorm``) also those of the AS-normalised scores (``*_snorm``,
    ``scores_snorm``); ``far`` / ``far_snorm``: the share of non-target trials accepted at
    ``threshold`` / at the cohort's calibrated threshold, where those are given."""
    from ..scoring import false_accept_rate

    cuts = load_set(corpus, set_name)
    trials = read_trials(trials_path(corpus, set_name), known_ids={c.id for c in cuts})
    if len({t.target for t in trials}) < 2:
        return {"eer": None, "trials": len(trials), "note": "trial list lacks targets or non-targets"}
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    emb = embeddings(model, [c for c in cuts if c.id in needed], task)
    res = evaluate_trials(emb, trials)
    if threshold is not None:
        res["far"] = false_accept_rate(res["scores"], res["labels"], threshold)
    if snorm is not None:
        _, normed = snorm.trial_scores(emb, trials)
        eer, thr = metrics.eer(normed, res["labels"])
        res.update(eer_snorm=eer, threshold_snorm=thr, scores_snorm=normed,
                   **{"min_dcf_0.01_snorm": metrics.min_dcf(normed, res["labels"], p_target=0.01)[0]})
        if snorm.threshold is not None:
            res["far_snorm"] = false_accept_rate(normed, res["labels"], snorm.threshold)
    base = read_info(corpus).get("sets", {}).get(set_name, {}).get("mfcc_baseline_eer")
    res["mfcc_baseline_eer"] = base
    return res


def evaluate_classifier(model, cuts, task: str) -> dict:
    target = model.config.tasks[task].target
    vocab = model.config.vocab[target]
    cuts = [c for c in cuts if label(c, target) in set(vocab)]
    if not cuts:
        return {}
    refs, hyps = [], []
    for cut, pieces in predict_windows(model, cuts, task):
        refs.append(label(cut, target))
        hyps.append(vocab[int(torch.stack(pieces).float().log_softmax(-1).mean(0).argmax())])
    return {"accuracy": metrics.accuracy(refs, hyps), "n": len(refs)}


def windows(cut, seconds: float | None) -> list:
    """The cut in consecutive pieces of at most ``seconds`` (an encoder's input limit)."""
    if not seconds or cut.duration <= seconds:
        return [cut]
    starts = np.arange(0.0, cut.duration, seconds)
    return [cut.truncate(offset=float(s), duration=float(min(seconds, cut.duration - s)), preserve_id=False)
            for s in starts if cut.duration - s > 0.05]


def predict_windows(model, cuts, task: str, key: str = "logits"):
    """Yield (cut, [output ``key`` per window, in time order]): ``predict`` for recordings
    longer than the encoder takes in one pass."""
    limit = model.encoder.max_input_seconds
    for cut in cuts:
        pieces = windows(cut, limit)
        by_id = {c.id: o[task][key] for c, o in predict(model, pieces, [task], max_seconds=60.0)}
        yield cut, [by_id[c.id] for c in pieces]  # predict reorders by length


def _vad_frames(model, cuts, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference speech, head logits) per 10 ms frame over ``cuts``, concatenated."""
    refs, logits = [], []
    fps = model.encoder.frames_per_second
    for cut, pieces in predict_windows(model, cuts, task):
        x = torch.cat(pieces).float().cpu().numpy()
        n = int(round(cut.duration * 100))
        idx = np.minimum((np.arange(n) * fps / 100.0).astype(int), len(x) - 1)
        logits.append(x[idx])
        refs.append(metrics.segments_to_frames([(s.start, s.end) for s in cut.supervisions], cut.duration)[:n])
    return np.concatenate(refs), np.concatenate(logits)


def evaluate_vad(model, cuts, task: str) -> dict:
    """Frame F1 at the head's decision threshold (speech where its logit > 0)."""
    refs, logits = _vad_frames(model, cuts, task)
    return metrics.frame_f1(refs, logits > 0)


VAD_THRESHOLDS = np.arange(-4.0, 6.01, 0.25)  # logit thresholds tried on the dev set


def vad_threshold(model, cuts, task: str) -> tuple[float, float]:
    """(logit threshold of best frame F1 on ``cuts``, that F1); ties go to the one nearest 0."""
    refs, logits = _vad_frames(model, cuts, task)
    scored = [(metrics.frame_f1(refs, logits > t)["f1"], -abs(t), float(t)) for t in VAD_THRESHOLDS]
    f1, _, t = max(scored)
    return t, float(f1)


def evaluate_model(model, corpus: str | Path, sets: list[str] | None = None, limit: int | None = None,
                   snorm=None, verify_threshold: float | None = None) -> dict:
    """Every head on every applicable set of the corpus. Returns nested JSON-able results.
    ``snorm``, ``verify_threshold``: the calibrated cohort and raw threshold (see
    ``evaluate_speaker``), so trial lists also report normalised EERs and false accepts."""
    have = set(available_sets(corpus))
    decoders = {t: model.heads[t].tasks for t in model.tasks_with(head_type="whisper_decoder")}
    # retention: natural English the generator never wrote (clean, telephone) next to every
    # in-domain figure, so fitting the generator cannot pass for learning speech
    default = ("speech_test", "speaker_test", "ood_test", "retention_test", "retention_tel_test", "vad_test")
    if any(SPEAKERS in d for d in decoders.values()):
        default += ("conversations_test",)
    sets = sets or [s for s in default if s in have]
    results: dict[str, dict] = {}
    for set_name in sets:
        cuts = load_set(corpus, set_name)
        r = {}
        for task in model.tasks_with(target="text"):
            if set_name.startswith(("speech", "ood", "retention")):
                r[task] = evaluate_asr(model, cuts, task, limit)
        for task in model.tasks_with(head_type="speaker"):
            if trials_path(corpus, set_name).is_file():
                res = evaluate_speaker(model, corpus, set_name, task, snorm, verify_threshold)
                r[task] = {k: v for k, v in res.items() if k not in ("scores", "labels", "scores_snorm")}
        for task in model.tasks_with(head_type="classifier"):
            res = evaluate_classifier(model, list(cuts)[:limit] if limit else cuts, task)
            if res:
                r[task] = res
        for task in model.tasks_with(target="vad"):
            if set_name.startswith(("vad", "conversations")):
                r[task] = evaluate_vad(model, cuts, task)
        for task, decoder_tasks in decoders.items():
            if SLU in decoder_tasks and (res := evaluate_slu(model, cuts, task, limit)):
                r[f"{task}/{SLU}"] = res
            if LANGUAGE in decoder_tasks and (res := evaluate_language_token(model, cuts, task, limit)):
                r[f"{task}/{LANGUAGE}"] = res
            if SPEAKERS in decoder_tasks and set_name.startswith("conversations"):
                r[f"{task}/{SPEAKERS}"] = evaluate_speaker_tokens(model, cuts, task)
        if r:
            results[set_name] = r
    return results


def criterion(results: dict, weights: dict[str, float]) -> float:
    """The papers' model-selection score, e.g. 1/4 WER + 3/4 EER (lower is better)."""
    wer = next((v["wer"] for s in results.values() for v in s.values() if v.get("wer") is not None), None)
    eer = next((v["eer"] for s in results.values() for v in s.values() if v.get("eer") is not None), None)
    total = 0.0
    for name, value in (("wer", wer), ("eer", eer)):
        if value is not None and name in weights:
            total += weights[name] * min(value, 1.0)
    return total
