"""``whisper_decoder``: Whisper's pretrained decoder writes the transcript (and, with
``decoder_tasks``, commands, speaker turns or the language), with an optional CTC branch.

A decoder with several ``decoder_tasks`` trains on one stream that mixes them: each task
takes from the train sets (or its ``decoder_task_sets``) the cuts that carry its labels
(commands for slu, windows of long recordings for speakers, any labelled language for
language; transcribe as before), tagged with the task, and the pools are sampled with
temperature ``train.task_temperature`` over their seconds of audio. Each batch row then
learns its own task's target (``speech.decoder_target``).

Evaluation adds, per decoder task, results under "<task>/<decoder task>": slu: intent
accuracy and slot F1 beside the intent head; language: accuracy of the language token
beside the LID head; speakers: on the conversations, per window of at most the encoder's
input, cpWER of the speaker-token transcript and DER of its turns timed by CTC alignment.
"""

from __future__ import annotations

import numpy as np

from .. import metrics
from ..config import ConfigError
from ..data.corpus import label
from ..data.labels import CHARS, text_of
from ..data.windows import speaker_windows
from ..model.decoder import DEFAULT_CTC_WEIGHT, MAX_SPEAKERS, WhisperDecoderHead
from ..model.decoder_tasks import (LANGUAGE, SLU, SPEAKERS, TRANSCRIBE, TRANSLATE, decoder_tasks_of, parse_slu,
                                   parse_speakers)
from .base import TASK_KINDS
from .speech import CLOSED_SLU, DECODER_TASK, SpeechKind, evaluate_multilingual, transcribe_cuts

CONVERSATION_SETS = ("conversations_test",)  # scored by default when the decoder learns speakers
# foreign speech with English translations, and English with foreign nouns: scored by default
# when the decoder learns to translate, on request for any multilingual decoder
MULTILINGUAL_SETS = ("translate_test", "codeswitch_test")


@TASK_KINDS.register("whisper_decoder")
class WhisperDecoderKind(SpeechKind):
    head_class = WhisperDecoderHead
    targets = ("text",)
    decodes = True

    @property
    def decoder_tasks(self) -> list[str]:
        return decoder_tasks_of(self.task.head.options)

    def has_ctc(self) -> bool:
        return self.task.head.options.get("ctc_weight", DEFAULT_CTC_WEIGHT) > 0

    def check_cut(self, cut, vocab: dict) -> str | None:
        # Only the CTC branch spells with the character vocabulary: a decoder without one
        # writes any language its tokenizer does (accents included).
        if self.target == "text" and not self.has_ctc():
            if len(cut.supervisions) > 1:
                return "several speech segments: a long recording, not one utterance"
            return None if text_of(cut) else "no transcript"
        return super().check_cut(cut, vocab)

    # --- targets -----------------------------------------------------------------------------

    def vocab(self, cuts_of) -> dict:
        out = {"text": CHARS}
        if SLU in self.decoder_tasks:
            # the intents the decoder learns to write: its closed set at inference
            out["intent"] = {v for s in self.task.decoder_task_sets.get(SLU, self.task.train_sets)
                             for cut in cuts_of(s) if (v := label(cut, "intent"))}
        return out

    def check_training(self, joint: bool) -> None:
        tasks = self.decoder_tasks
        if tasks != [TRANSCRIBE] and joint:
            raise ConfigError(f"task {self.name}: decoder_tasks {tasks} need train.step=disjoint "
                              "(the joint step's batches carry one target per task)")
        unused = sorted(set(self.task.decoder_task_sets) - set(tasks))
        if unused:
            raise ConfigError(f"task {self.name}: decoder_task_sets names {unused}, not among decoder_tasks {tasks}")

    def pools(self, vocab: dict, max_utterance: float) -> dict:
        """One pool per decoder task: transcribe checks cuts as any speech task does; the
        others take the cuts that carry their labels (the rest just serve other tasks)."""
        max_speakers = self.task.head.options.get("max_speakers", MAX_SPEAKERS)
        pools = {}
        for t in self.decoder_tasks:
            sets = self.task.decoder_task_sets.get(t, self.task.train_sets)
            if t == TRANSCRIBE:
                pools[None if len(self.decoder_tasks) == 1 else t] = (sets, lambda cuts: (
                    (cut, self.why_unusable(cut, vocab)) for cut in cuts))
            else:
                pools[t] = (sets, lambda cuts, t=t: candidates(cuts, t, max_utterance, max_speakers))
        return pools

    def tag(self, cut, pool: str):
        return cut if pool == TRANSCRIBE else cut.with_id(f"{cut.id}.{pool}").with_custom(DECODER_TASK, pool)

    # --- evaluation --------------------------------------------------------------------------

    def extra_eval_sets(self) -> tuple[str, ...]:
        return ((CONVERSATION_SETS if SPEAKERS in self.decoder_tasks else ())
                + (MULTILINGUAL_SETS if TRANSLATE in self.decoder_tasks else ()))

    def evaluate(self, model, corpus, set_name: str, cuts, limit=None, **calibration) -> dict[str, dict]:
        if set_name.startswith(MULTILINGUAL_SETS):
            head = model.heads[self.name]
            return multilingual_results(model, cuts, self.name, limit, calibration.get("decoding")) if head.multilingual else {}
        r = super().evaluate(model, corpus, set_name, cuts, limit)
        tasks = model.heads[self.name].tasks
        if SLU in tasks and (res := evaluate_slu(model, cuts, self.name, limit)):
            r[f"{self.name}/{SLU}"] = res
        if LANGUAGE in tasks and (res := evaluate_language_token(model, cuts, self.name, limit)):
            r[f"{self.name}/{LANGUAGE}"] = res
        if SPEAKERS in tasks and set_name.startswith("conversations"):
            r[f"{self.name}/{SPEAKERS}"] = evaluate_speaker_tokens(model, cuts, self.name)
        return r

    # --- export ------------------------------------------------------------------------------

    def export_outputs(self) -> list[tuple[str, str]]:
        # the decoder's input (its encoder states) and its CTC branch; the decoder itself is
        # inference/onnx_decoder.py's two graphs
        return [("memory", "memory")] + ([("ctc_log_probs", "logits")] if self.has_ctc() else [])


def candidates(cuts, task: str, max_seconds: float, max_speakers: int):
    """(cut, why not) for the cuts that carry this decoder task's labels."""
    for cut in cuts:
        single = len(cut.supervisions) == 1
        if task == SLU and single and label(cut, "intent"):
            yield cut, None
        elif task == LANGUAGE and label(cut, "language"):
            yield cut, None
        elif task == TRANSLATE and single and label(cut, "translation"):
            yield cut, None
        elif task == SPEAKERS and len(cut.supervisions) > 1:
            for w in speaker_windows(cut, max_seconds):
                n = len({s.speaker for s in w.supervisions})
                yield w, (f"{n} speakers, more than max_speakers={max_speakers}" if n > max_speakers else None)


def multilingual_results(model, cuts, task: str, limit: int | None = None, decoding=None) -> dict[str, dict]:
    """A multilingual decoder on speech in several languages (``speech.evaluate_multilingual``,
    scored as the zero-shot peer is), as evaluate's results: ``<task>``: WER per language,
    each cut transcribed with its own language token, and their mean over the languages
    (``wer``: languages are normalised differently, so never pooled); ``<task>/language``:
    the language token it writes unprompted (the LID route beside the LID head);
    ``<task>/translate``: BLEU and chrF of its ``<|translate|>`` English."""
    cuts = [c for c in cuts if len(c.supervisions) == 1 and text_of(c) and label(c, "language")][:limit]
    if not cuts:
        return {}
    res = evaluate_multilingual(model, cuts, task, beam_size=(decoding.beam_size if decoding and decoding.beam_size else 1))
    by_language = res["wer_by_language"]
    out = {task: {"wer": float(np.mean([r["wer"] for r in by_language.values()])),
                  "cer": float(np.mean([r["cer"] for r in by_language.values()])),
                  "by_language": by_language, "n": res["n"]}}
    if res.get("language_accuracy") is not None:
        out[f"{task}/{LANGUAGE}"] = {k: res[k] for k in ("language_accuracy", "language_accuracy_by_language",
                                                         "detected")}
    if res["translate"].get("n"):
        out[f"{task}/{TRANSLATE}"] = res["translate"]
    return out


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
            ders.append(metrics.der(ref_turns, timed_turns(turns, times))["der"])
    return {"cpwer": float(np.mean(cpwers)), "der": float(np.mean(ders)) if ders else None, "windows": len(cpwers)}


def timed_turns(turns: list[tuple[int, str]], times: list[dict]) -> list[tuple[float, float, int]]:
    """(start, end, speaker) per turn from the times of its words; none when the alignment failed."""
    from ..ctc import words_by_turn

    return [(mine[0]["start"], mine[-1]["end"], n) for n, mine in words_by_turn(turns, times) if mine]
