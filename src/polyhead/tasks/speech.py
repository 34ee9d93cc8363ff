"""What the two speech kinds (``ctc``, ``whisper_decoder``) share: transcripts as targets,
and WER / CER of the head's own transcripts as their metric.

WER / CER are on Whisper's normalisation of written references and raw hypotheses
(metrics.error_rates), with how well the written form (punctuation, case) is kept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

from .. import metrics
from ..data.batching import Collator, FeatureCache, Rows
from ..data.corpus import label, load_set
from ..data.labels import CHARS, phonemes_of, raw_text_of, text_of
from ..model.decoder_tasks import LANGUAGE, SLU, SPEAKERS, TRANSCRIBE, TRANSLATE, slu_text, speakers_text
from .base import EVAL_BATCH_SECONDS, TaskKind, batches_by_duration, row_of

DECODER_TASK = "decoder_task"  # the cut's custom field naming its decoder task (none: transcribe)
ASR_SET_PREFIXES = ("speech", "ood", "retention")  # test sets with transcripts to score
CLOSED_SLU = "closed_slu"  # transcribe_cuts: <|slu|> with the intent from the trained set
ASR_METRICS = ("wer", "cer")  # what a dev evaluation keeps


@dataclass
class TextTarget:
    """Transcripts of a batch: CTC label ids (padded) and their lengths, and the text itself
    (as written in the corpus) for heads with a tokenizer of their own (Whisper's decoder)."""

    ids: torch.Tensor  # [B, L], 0-padded; characters or phonemes, 1-based (0 = blank)
    lengths: torch.Tensor  # [B]
    texts: list[str]  # per row its decoder task's target (decoder_target)
    tasks: list[str] | None = None  # decoder task per row; None: all transcribe
    languages: list[str | None] | None = None  # the language spoken per row (a multilingual prompt's)

    def to(self, device) -> "TextTarget":
        return TextTarget(self.ids.to(device), self.lengths.to(device), self.texts, self.tasks, self.languages)

    def pin_memory(self) -> "TextTarget":  # called by a DataLoader with pin_memory
        return TextTarget(self.ids.pin_memory(), self.lengths.pin_memory(), self.texts, self.tasks, self.languages)


def decoder_task_of(cut) -> str:
    return (getattr(cut, "custom", None) or {}).get(DECODER_TASK, TRANSCRIBE)


def decoder_target(cut, task: str) -> str:
    """What the decoder learns to write for this cut in this task (decoder_tasks.py)."""
    if task == SLU:
        return slu_text(label(cut, "intent"), label(cut, "slots"))
    if task == LANGUAGE:
        return label(cut, "language")
    if task == TRANSLATE:
        return label(cut, "translation") or ""
    if task == SPEAKERS:
        return speakers_text([(s.speaker, s.text or "") for s in sorted(cut.supervisions, key=lambda s: s.start)])
    return raw_text_of(cut) or ""


class TextTargets:
    """The ``TargetFn`` of transcripts over ``symbols`` (characters, or phonemes with
    ``of=phonemes_of``): CTC learns the transcripts of transcribe rows only."""

    def __init__(self, symbols: list[str] = CHARS, of=text_of):
        self.index, self.of = {v: i for i, v in enumerate(symbols)}, of

    def __call__(self, cuts: list, rows: Rows | None = None) -> TextTarget:
        tasks = [decoder_task_of(c) for c in cuts]
        seqs = [self.of(c) if t == TRANSCRIBE else "" for c, t in zip(cuts, tasks)]
        ids = [[self.index[ch] + 1 for ch in (s or "") if ch in self.index] for s in seqs]
        lens = torch.tensor([len(s) for s in ids])
        padded = torch.zeros(len(ids), max(1, int(lens.max())), dtype=torch.long)
        for i, s in enumerate(ids):
            padded[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        texts = [decoder_target(c, t) for c, t in zip(cuts, tasks)]
        languages = [label(c, "language") if len(c.supervisions) == 1 else None for c in cuts]
        return TextTarget(padded, lens, texts, None if set(tasks) == {TRANSCRIBE} else tasks,
                          languages if any(languages) else None)


class SpeechKind(TaskKind):
    """Transcripts (``text``) or phoneme strings (``phonemes``) of single utterances."""

    targets = ("text", "phonemes")
    per_frame = True
    transcribes = True
    answer_rank = 0

    def reader(self):
        return phonemes_of if self.target == "phonemes" else text_of

    def vocab(self, cuts_of) -> dict[str, set | list]:
        if self.target == "text":
            return {"text": CHARS}  # a list: its order is the head's
        # phoneme symbols: the characters of the phoneme strings
        return {"phonemes": {ch for s in self.task.train_sets for cut in cuts_of(s) for ch in (phonemes_of(cut) or "")}}

    def check_cut(self, cut, vocab: dict) -> str | None:
        if self.target == "text":
            text = text_of(cut)
            if not text:
                return "no transcript"
            bad = sorted(set(text) - set(vocab["text"]))
            if bad:
                return f"characters outside the vocabulary: {''.join(bad)!r}"
        if len(cut.supervisions) > 1:
            return "several speech segments: a long recording, not one utterance"  # label() reads the first
        if self.target == "phonemes" and not phonemes_of(cut):
            return "no phonemes"
        return None

    def collate(self, cuts: list, rows: Rows) -> TextTarget:
        return TextTargets(self.labels, self.reader())(cuts, rows)

    def evaluate(self, model, corpus, set_name: str, cuts, limit=None, **calibration) -> dict[str, dict]:
        if self.target != "text" or not set_name.startswith(ASR_SET_PREFIXES):
            return {}
        return {self.name: evaluate_asr(model, cuts, self.name, limit, calibration.get("decoding"))}

    def dev_metrics(self, model, corpus, set_name: str, limit: int) -> dict | None:
        if self.target != "text":
            return None
        r = evaluate_asr(model, load_set(corpus, set_name), self.name, limit=limit)
        return {k: r[k] for k in ASR_METRICS}


@torch.no_grad()
def transcribe_cuts(model, cuts, task: str, max_seconds: float = EVAL_BATCH_SECONDS,
                    decoder_task: str = TRANSCRIBE, with_output: bool = False, decoding=None):
    """Yield (cut, transcript) with the head's own decoding, one padded batch at a time.
    A Whisper decoder's other tasks: their text (greedy), or for ``language`` the language
    code; ``with_output`` adds the head's output row (CTC logits for alignment); ``decoding``:
    the transcripts' ``DecodingOptions`` (default the head's own: greedy, or its configured beam)."""
    model.eval()
    device = next(model.parameters()).device
    collate = Collator({}, FeatureCache(model.encoder.features, enabled=False))
    head = model.heads[task]
    if (decoder_task == TRANSCRIBE and getattr(head, "multilingual", False) and head.language is None
            and (decoding is None or decoding.language is None)):
        # a multilingual decoder with no language of its own: each cut in the language it is
        # labelled with (an evaluation knows it; inference detects it instead)
        from ..decoding import DecodingOptions

        base = decoding or DecodingOptions(beam_size=head.beam_size)
        by_language: dict[str, list] = {}
        for cut in cuts:
            by_language.setdefault(language_of(cut), []).append(cut)
        for lang, group in by_language.items():
            yield from transcribe_cuts(model, group, task, max_seconds, decoder_task, with_output,
                                       replace(base, language=lang))
        return
    for group in batches_by_duration(list(cuts), max_seconds):
        b = collate(group).to(device)
        out = model(b.inputs, b.lengths, [task])[task]
        if decoder_task == TRANSCRIBE:
            answers = head.transcribe(out, model.config.vocab.get("text"), options=decoding)
        elif decoder_task == LANGUAGE:
            answers = [r["language"] for r in head.detect_language(out["memory"], out["lengths"])]
        elif decoder_task == CLOSED_SLU:
            answers = [r["text"] for r in head.closed_slu(out["memory"], out["lengths"], model.config.vocab["intent"],
                                                          frames_per_second=out["frames_per_second"])]
        else:
            answers = [r["text"] for r in head.generate(out["memory"], out["lengths"], task=decoder_task,
                                                         frames_per_second=out["frames_per_second"])]
        if with_output:
            answers = [(a, row_of(out, i)) for i, a in enumerate(answers)]
        yield from zip(group, answers)


def evaluate_asr(model, cuts, task: str, limit: int | None = None, decoding=None) -> dict:
    cuts = [c for c in cuts if text_of(c)][:limit]
    refs, hyps = [], []
    for cut, hyp in transcribe_cuts(model, cuts, task, decoding=decoding):
        refs.append(raw_text_of(cut))  # written form: the scorer normalises both sides
        hyps.append(hyp)
    return asr_result(refs, hyps)


def asr_result(refs: list[str], hyps: list[str], language: str = "en") -> dict:
    """WER/CER on Whisper's normalisation (its English normaliser for ``en``, its basic one
    otherwise), and how well the written form (punctuation, case) is kept, from written
    references and raw hypotheses."""
    res = metrics.error_rates(refs, hyps, language)
    res.update(metrics.written_form(refs, hyps))
    res["normaliser"] = metrics.SCORING_NORMALISER
    res["n"] = len(refs)
    res["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]
    return res


def language_of(cut) -> str:
    """The cut's language; a cut without one is English (every set before translation came)."""
    return label(cut, "language") or "en"


def rows_by_language(languages: list[str]) -> dict[str, list[int]]:
    """The row numbers of each language, by code in sorted order."""
    rows: dict[str, list[int]] = {}
    for i, lang in enumerate(languages):
        rows.setdefault(lang, []).append(i)
    return dict(sorted(rows.items()))


def asr_by_language(refs: list[str], hyps: list[str], languages: list[str]) -> dict[str, dict]:
    """``asr_result`` of each language's utterances on that language's normaliser, by
    language code (WER pooled within a language, never across)."""
    if not len(refs) == len(hyps) == len(languages):
        raise ValueError(f"{len(refs)} references, {len(hyps)} hypotheses, {len(languages)} languages")
    return {lang: asr_result([refs[i] for i in rows], [hyps[i] for i in rows], lang)
            for lang, rows in rows_by_language(languages).items()}


def translation_result(refs: list[str], hyps: list[str], languages: list[str]) -> dict:
    """``metrics.translation_scores`` of the whole set, and of each source language's
    utterances (``by_language``), with three examples."""
    res = metrics.translation_scores(refs, hyps)
    res["by_language"] = {}
    for lang, rows in rows_by_language(languages).items():
        scores = metrics.translation_scores([refs[i] for i in rows], [hyps[i] for i in rows])
        res["by_language"][lang] = {k: scores[k] for k in ("bleu", "chrf", "n")}
    res["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]
    return res


def language_id_result(languages: list[str], detected: list[str]) -> dict:
    """How often the detected language is the cut's own: overall, per language, and how
    often each code was detected (most first)."""
    if not languages:
        return {"language_accuracy": None, "language_accuracy_by_language": {}, "detected": {}}
    return {"language_accuracy": metrics.accuracy(languages, detected),
            "language_accuracy_by_language": {
                lang: metrics.accuracy([languages[i] for i in rows], [detected[i] for i in rows])
                for lang, rows in rows_by_language(languages).items()},
            "detected": dict(Counter(detected).most_common())}


def translate_cuts(model, cuts, task: str) -> dict:
    """The speech head ``task``'s English translations (greedy, each cut's source language
    given) of the cuts with a reference translation, scored by ``translation_result``;
    ``{"skipped": why}`` where the head cannot translate."""
    from ..decoding import DecodingOptions

    head = model.heads[task]
    cuts = [c for c in cuts if label(c, "translation")]
    if not hasattr(head, "generate") or not getattr(head, "multilingual", False):
        return {"skipped": f"{task}: only a multilingual Whisper decoder translates ({type(head).__name__})"}
    languages = [language_of(c) for c in cuts]
    hyps: dict[str, str] = {}
    for lang, rows in rows_by_language(languages).items():
        # through the transcripts' path: its DecodingOptions carry the source language,
        # which decoder_task= would not
        options = DecodingOptions(language=lang, task=TRANSLATE)
        hyps.update((c.id, h) for c, h in transcribe_cuts(model, [cuts[i] for i in rows], task, decoding=options))
    refs = [" ".join(label(c, "translation").split()) for c in cuts]
    return translation_result(refs, [hyps[c.id] for c in cuts], languages)


def evaluate_multilingual(model, cuts, task: str, beam_size: int = 1) -> dict:
    """The speech head ``task`` on multilingual cuts, scored as zero-shot Whisper is
    (``evaluation.zeroshot.evaluate_zero_shot_multilingual``): transcripts with each cut's own
    language given (per-language WER; ``beam_size`` > 1: beam search), the language the
    decoder detects (a multilingual Whisper decoder only) and ``translate_cuts``."""
    from ..decoding import DecodingOptions

    head = model.heads[task]
    multilingual = bool(getattr(head, "multilingual", False))
    cuts = [c for c in cuts if text_of(c)]  # the cuts evaluate_asr and the zero-shot peer score
    languages = [language_of(c) for c in cuts]
    hyps: dict[str, str] = {}
    for lang, rows in rows_by_language(languages).items():
        # an English-only decoder has no language token to force: it writes what it can
        options = DecodingOptions(language=lang if multilingual else None, beam_size=beam_size)
        hyps.update((c.id, h) for c, h in transcribe_cuts(model, [cuts[i] for i in rows], task, decoding=options))
    refs = [raw_text_of(c) for c in cuts]
    result = {"n": len(cuts), "wer_by_language": asr_by_language(refs, [hyps[c.id] for c in cuts], languages),
              "language_accuracy": None}
    if multilingual:  # the language token after <|startoftranscript|>: an English-only decoder has none
        detected = dict((c.id, a) for c, a in transcribe_cuts(model, cuts, task, decoder_task=LANGUAGE))
        result.update(language_id_result(languages, [detected[c.id] for c in cuts]))
    result["translate"] = translate_cuts(model, cuts, task)
    return result
