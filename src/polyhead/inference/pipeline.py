"""One pass, every answer: transcript (with word times and a confidence), speaker embedding,
language probabilities, intent and speech segments from a single encoder forward.

The VAD head gates the decoder: an input with no speech segment gets an empty transcript
instead of whatever a decoder writes over silence. ``no_speech_prob`` (of the input and of
each segment) is 1 - the VAD head's mean speech probability over the frames: a probability,
as Whisper's is, rather than a count of hard frame decisions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE, AudioError, is_silent, load_audio, to_model_audio
# GREEDY, WHISPER_TEMPERATURES and compression_ratio: still importable from here, as callers have them
from ..decoding import (GREEDY, WHISPER_TEMPERATURES, DecodingOptions, compression_ratio,  # noqa: F401
                        decode_with_fallback)
from ..ctc import greedy_path
from ..text import normalize_text
from ..model import MultiTaskModel
from ..model.decoder_tasks import TRANSCRIBE, TRANSLATE
from ..model.encoders.whisper import WHISPER_FRAMES_PER_SECOND
from ..runs import CONFIG_FILE, WEIGHTS_FILE, apply_calibration, checkpoint_folder, read_calibration
from ..scoring import ScoreNorm
from ..tasks import task_kinds

MIN_SEGMENT_S = 0.2  # VAD segments shorter than this are dropped
VAD_MERGE_GAP_S = 0.3  # VAD segments closer than this are one segment (a pause within a turn)


def pretrained_whisper(name_or_path: str | Path) -> Path | None:
    """The transformers folder of plain Whisper that ``name_or_path`` names: a catalogue name
    (``polyhead models list``; installed when missing), another converted folder's name in the
    models folder, or a transformers Whisper folder (config.json with model_type whisper +
    model.safetensors); None for anything else (a run, checkpoint or export folder)."""
    from ..model import pretrained as catalogue

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path if catalogue.is_transformers_folder(path) and (path / WEIGHTS_FILE).is_file() else None
    key = str(name_or_path)
    if key in catalogue.MODELS:
        return catalogue.resolve(key)
    if key and "/" not in key and catalogue.is_complete(catalogue.models_dir() / key):
        return catalogue.models_dir() / key
    return None


def whisper_model(folder: str | Path) -> MultiTaskModel:
    """Plain Whisper as a polyhead model: its encoder, and its pretrained decoder as the one
    speech head (no CTC branch, no other head), in English for an English-only model and in
    the language it detects for a multilingual one unless told; every input in Whisper's
    30 s window, as it was trained."""
    from ..config import Config
    from ..model.pretrained import MULTILINGUAL_VOCAB

    folder = Path(folder)
    vocab_size = json.loads((folder / CONFIG_FILE).read_text()).get("vocab_size", 0)
    # zero-shot Whisper needs its 30 s window
    encoder = {"name": "whisper", "pretrained": str(folder), "pad_to_window": True}
    head = {"type": "whisper_decoder",
            "options": {"ctc_weight": 0.0, "language": None if vocab_size >= MULTILINGUAL_VOCAB else "en"}}
    config = Config.model_validate({"corpus": "", "encoder": encoder,
                                    "tasks": {"asr": {"head": head, "target": "text", "train_sets": []}}})
    return MultiTaskModel(config).eval()


DEFAULT_VERIFY_THRESHOLD = 0.5


# Decoding options and Whisper's fallback live in ``decoding``; ``Decoding`` is their old name here.
Decoding = DecodingOptions
decode = decode_with_fallback


@dataclass(frozen=True)
class Features:
    """One input ready for the encoder: ``inputs`` [frames, mels] (or [samples] for a
    waveform encoder), the audio's duration in seconds and how to decode it; ``silent``:
    the samples are below the silence floor (``audio.is_silent``): no speech, whatever the
    VAD head says."""

    inputs: np.ndarray
    duration: float
    decoding: Decoding = GREEDY
    silent: bool = False
    translate: bool = False  # also the English translation, from the same encoder pass


def no_speech_prob(vad_logits: torch.Tensor) -> float:
    """1 - mean speech probability over these VAD frames."""
    return round(1.0 - float(vad_logits.float().sigmoid().mean()), 4) if len(vad_logits) else 1.0


class Polyhead:
    def __init__(self, model: MultiTaskModel, threshold: float = DEFAULT_VERIFY_THRESHOLD):
        self.model = model.eval()
        self.config = model.config
        # answers in their kinds' order: transcripts first, voice activity last
        self.kinds = sorted(task_kinds(self.config), key=lambda k: k.answer_rank)
        self.threshold = threshold
        self.snorm = None  # the AS-norm cohort and threshold (scoring.ScoreNorm) where calibrated

    @classmethod
    def load(cls, path: str | Path, quantize: str | None = None) -> "Polyhead":
        """A run or checkpoint folder, a `polyhead export` folder (ONNX or int8), or plain
        Whisper: a name from `polyhead models list` or a transformers Whisper folder (its
        decoder the one speech head, ``whisper_model``); ``quantize="int8"`` quantises a
        PyTorch model on loading."""
        from .export import is_export, load_export
        from .export import quantize as quantized

        if not is_export(path) and (whisper := pretrained_whisper(path)) is not None:
            return cls(quantized(whisper_model(whisper), quantize))
        try:
            folder = Path(path) if is_export(path) else checkpoint_folder(path)
        except FileNotFoundError as e:  # load also takes Whisper: say so
            raise FileNotFoundError(f"{e}, and not a Whisper model (a name from `polyhead models list`, or a "
                                    "transformers Whisper folder)") from None
        calibration, cal_dir = read_calibration(folder)
        model = load_export(folder) if is_export(folder) else MultiTaskModel.load(folder)
        if isinstance(model, MultiTaskModel):  # an ONNX graph has the VAD threshold built in (export)
            apply_calibration(model, calibration)
        ph = cls(quantized(model, quantize), calibration.get("verify_threshold", DEFAULT_VERIFY_THRESHOLD))
        ph.snorm = ScoreNorm.load(cal_dir, calibration) if cal_dir is not None else None
        return ph

    @property
    def max_seconds(self) -> float:
        """Longest input one encoder pass takes (Whisper: 30 s); inf when unbounded."""
        return getattr(self.model.encoder, "max_input_seconds", None) or float("inf")

    def _samples(self, audio, sample_rate: int | None = None) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            return to_model_audio(audio, sample_rate or SAMPLE_RATE)
        return load_audio(audio)

    @torch.no_grad()
    def embed(self, audio, sample_rate: int | None = None) -> np.ndarray:
        """Unit-length speaker embedding of a whole utterance."""
        tasks = [k.name for k in self.kinds if k.embeds]
        if not tasks:
            raise ValueError("this model has no speaker head")
        task = tasks[0]
        inputs, lengths = self.model_inputs(self._samples(audio, sample_rate))
        e = self.model(inputs, lengths, [task])[task]["embedding"][0].numpy()
        return e / (np.linalg.norm(e) + 1e-12)

    def verify(self, a, b) -> dict:
        """Cosine score of two recordings and the decision at the calibrated threshold
        (the dev trial list's equal-error-rate threshold; on AS-normed scores where the run
        has a cohort: ``speaker.verify``)."""
        from .speaker import verify

        return verify(self, a, b)

    def model_inputs(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [1, frames, dims], lengths [1]) of one utterance, as the model takes them."""
        x = self.model.encoder.features(samples)
        return torch.from_numpy(np.ascontiguousarray(x))[None], torch.tensor([len(x)])

    def decoder(self):
        """The speech task's decoder head (Whisper's), or None for a CTC-only model."""
        speech = self.speech_task()
        return _head(self.model, speech.name) if speech is not None and speech.decodes else None

    def speech_task(self):
        """The kind of the task whose answer is the transcript, or None."""
        return next((k for k in self.kinds if k.transcribes), None)

    def check_decoding(self, decoding: Decoding) -> None:
        """ValueError, with the reason, for options this model cannot honour."""
        head = self.decoder()
        if head is None:
            asked = [f"{k}={v!r}" for k, v in vars(decoding).items() if v != getattr(GREEDY, k)]
            if asked:
                raise ValueError(f"this model's speech head is CTC only (no decoder): it cannot take "
                                 f"{', '.join(asked)}")
        else:
            if decoding.language is not None or decoding.task != TRANSCRIBE:
                # raises for a language the model has no token for, or a task it cannot do
                # (an English-only model cannot translate)
                head.prompt(decoding.language or "en", decoding.task)
            if decoding.ctc_weight and not head.has_ctc:
                raise ValueError(f"ctc_weight={decoding.ctc_weight}: this model's decoder was trained without "
                                 "a CTC branch")

    def decoding_language(self, decoding: Decoding) -> str | None:
        """The language the decoder writes in: the forced one, else its configured one
        (English for an English-only model); None without a decoder."""
        head = self.decoder()
        if head is None:
            return None
        if decoding.task == TRANSLATE:
            return "en"
        return (decoding.language or head.language) if head.multilingual else "en"

    def check_translation(self) -> None:
        """ValueError unless this model can translate: a multilingual Whisper decoder."""
        head = self.decoder()
        if head is None or not head.multilingual:
            raise ValueError("this model cannot translate: translation needs a multilingual Whisper decoder "
                             "(an English-only or CTC-only speech head has no <|translate|> task)")

    def features(self, audio, sample_rate: int | None = None, decoding: Decoding = GREEDY,
                 translate: bool = False) -> Features:
        """Decode and featurise one input; the model itself is not touched, so a server can
        do this on any thread while another one runs the model. ``translate``: the analysis
        also gets the English translation (``check_translation``)."""
        if translate:
            self.check_translation()
        samples = self._samples(audio, sample_rate)
        if len(samples) / SAMPLE_RATE > self.max_seconds:
            raise AudioError(f"{audio if isinstance(audio, (str, Path)) else 'audio'}: "
                             f"{len(samples) / SAMPLE_RATE:.1f} s is longer than this model's "
                             f"{self.max_seconds:g} s window; long recordings go through "
                             "`polyhead transcribe` (chunked)")
        inputs = np.ascontiguousarray(self.model.encoder.features(samples), dtype=np.float32)
        return Features(inputs, round(len(samples) / SAMPLE_RATE, 3), decoding, is_silent(samples), translate)

    def analyze(self, audio, sample_rate: int | None = None, translate: bool = False) -> dict:
        """``audio``: a path, encoded bytes, or samples (with ``sample_rate``); ``translate``:
        the English translation too (``translation``, beside the transcript, from the same
        encoder pass; a multilingual decoder only)."""
        return self.analyze_batch([audio], sample_rate, translate)[0]

    def analyze_batch(self, audios: list, sample_rate: int | None = None, translate: bool = False) -> list[dict]:
        """``analyze`` for several inputs with ONE padded encoder pass; item i's answer is
        what ``analyze(audios[i])`` returns, up to float rounding (fbank encoders mask the
        padding everywhere; a waveform encoder with a group-normed front end does not)."""
        return self.analyze_features([self.features(a, sample_rate, translate=translate) for a in audios])

    @torch.no_grad()
    def analyze_features(self, items: list[Features]) -> list[dict]:
        """``analyze_batch`` for inputs already through ``features``."""
        if not items:
            return []
        out = self.model(*pad_batch([f.inputs for f in items]))
        fps = self.model.encoder.frames_per_second
        vad = [k.name for k in self.kinds if k.detects_speech]
        speech = {}  # item -> (its VAD logits, its segments)
        for task in vad:
            for i in range(len(items)):
                logits = out[task]["logits"][i, :int(out[task]["lengths"][i])]
                speech[i] = (logits, [] if items[i].silent else self.speech_segments(logits, fps))
        heard = [i for i in range(len(items)) if not items[i].silent and (not vad or speech[i][1])]
        quiet = {i: no_speech_prob(speech[i][0]) for i in speech}  # the VAD head's no-speech probability
        texts = {k.name: self._decode(k.name, out[k.name], [f.decoding for f in items], heard, quiet)
                 for k in self.kinds if k.transcribes}
        spoken = self._decoder_answers(out, heard)
        translations = self._translations(out, items, [i for i in heard if items[i].translate], texts)
        results = []
        for i, f in enumerate(items):
            result: dict = {"duration": f.duration}
            for kind in self.kinds:
                task = kind.name
                if kind.transcribes:  # decoded above, gated by the voice activity
                    result.update(self._transcript_of(task, out[task], i, texts[task], fps,
                                                      speech[i][1] if i in speech else None,
                                                      aligned=f.decoding.task == TRANSCRIBE) if i in heard
                                  else self._no_transcript(texts[task] is not None))
                elif not kind.detects_speech:  # voice activity: its segments come last
                    result.update(kind.answer(out[task], i))
            result.update(spoken.get(i, {}))
            if f.translate:
                result.update(translations.get(i, {"translation": "", "translation_from": None}))
            if i in speech:
                result["no_speech_prob"] = no_speech_prob(speech[i][0])
                result["segments"] = speech[i][1]
            results.append(result)
        return results

    def _decode(self, task: str, out: dict, decodings: list[Decoding],
                items: list[int] | None = None, no_speech: dict[int, float] | None = None) -> dict[int, dict] | None:
        """The decoder's transcripts of ``items`` of a batch (default all) by item, each
        group of items with the same options decoded together (``decode``: Whisper's
        temperature fallback and no-speech rule, ``no_speech`` the VAD head's probability by
        item where there is one); None for a CTC-only head."""
        head = _head(self.model, task)
        if head is None or not task_kinds(self.config, [task])[0].decodes:
            return None
        groups = defaultdict(list)
        for i in range(len(decodings)) if items is None else items:
            groups[decodings[i]].append(i)
        decoded = {}
        for d, idx in groups.items():
            rows = torch.tensor(idx)
            res = decode(head, out["memory"][rows], out["lengths"][rows], d,
                         frames_per_second=out["frames_per_second"],
                         no_speech=[no_speech[i] for i in idx] if no_speech else None,
                         ctc_logits=out["logits"][rows] if "logits" in out else None,
                         vocab=self.config.vocab.get("text"))
            decoded.update(zip(idx, res))
        return decoded

    def _translations(self, out: dict, features: list[Features], items: list[int],
                      texts: dict[str, dict[int, dict] | None]) -> dict[int, dict]:
        """The English of ``items`` by item (``translation``, and ``translation_from``: the
        language translated from): ``<|translate|>`` after the language each was transcribed
        in (forced, configured or detected); English speech is its own translation."""
        head = self.decoder()
        if head is None or not items:
            return {}
        task = self.speech_task().name
        decoded = texts.get(task) or {}
        answers, groups = {}, defaultdict(list)
        for i in items:
            d = features[i].decoding
            source = decoded.get(i, {}).get("language") or d.language or head.language
            if d.task == TRANSLATE:  # the transcript is the translation already
                answers[i] = {"translation": decoded[i]["text"], "translation_from": source}
            elif source == "en":
                answers[i] = {"translation": decoded[i]["text"], "translation_from": "en"}
            else:
                groups[(source, d)].append(i)
        for (source, d), idx in groups.items():
            rows = torch.tensor(idx)
            options = DecodingOptions(language=source, task=TRANSLATE, temperature=d.temperature,
                                      beam_size=d.beam_size)
            res = decode(head, out[task]["memory"][rows], out[task]["lengths"][rows], options,
                         frames_per_second=out[task]["frames_per_second"])
            for i, r in zip(idx, res):
                answers[i] = {"translation": r["text"], "translation_from": r.get("language") or source}
        return answers

    def _decoder_answers(self, out: dict, items: list[int]) -> dict[int, dict]:
        """What a decoder trained on more than transcripts says besides them, per item: the
        intent and slots it writes after <|slu|> (``slu``), and the language token it puts
        after <|startoftranscript|> (``decoder_language``), beside the heads' answers."""
        from ..model.decoder_tasks import LANGUAGE, SLU, parse_slu

        answers: dict[int, dict] = defaultdict(dict)
        head = self.decoder()
        if head is None or not items:
            return answers
        task = self.speech_task().name
        rows = torch.tensor(items)
        memory, lengths = out[task]["memory"][rows], out[task]["lengths"][rows]
        if SLU in head.tasks:
            fps, intents = out[task]["frames_per_second"], self.config.vocab.get("intent")
            if intents:  # the intent from the trained set, then the slots the decoder writes after it
                for i, r in zip(items, head.closed_slu(memory, lengths, intents, frames_per_second=fps)):
                    intent, slots = parse_slu(r["text"])
                    answers[i]["slu"] = {"intent": intent, "slots": slots, "intent_logprob": r["intent_logprob"]}
            else:  # a checkpoint from before the intents were saved: written freely
                for i, r in zip(items, head.generate(memory, lengths, task=SLU, frames_per_second=fps)):
                    intent, slots = parse_slu(r["text"])
                    answers[i]["slu"] = {"intent": intent, "slots": slots, "avg_logprob": r["avg_logprob"]}
        if LANGUAGE in head.tasks:
            for i, r in zip(items, head.detect_language(memory, lengths)):
                top = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:5]
                answers[i]["decoder_language"] = r["language"]
                answers[i]["decoder_language_probs"] = {k: round(v, 4) for k, v in top}
        return answers

    @staticmethod
    def _no_transcript(decoder: bool) -> dict:
        """What an input without speech gets: no text, and no decoder score (it was not run)."""
        scores = {"avg_logprob": None, "temperature": None, "compression_ratio": None}
        return {"text": "", "words": [], "confidence": None, **(scores if decoder else {})}

    def _transcript_of(self, task: str, out: dict, i: int, decoded: dict[int, dict] | None, fps: float,
                       speech: list[dict] | None = None, aligned: bool = True) -> dict:
        """Text, words with times and a confidence for item i: the decoder's text with word
        times from CTC forced alignment (inside the VAD's ``speech`` segments where there
        are some), or the CTC head's own greedy transcript. ``aligned=False``: text that is
        not the speech's own words (a translation) gets no word times."""
        n = int(out["lengths"][i])
        logits = out["logits"][i, :n] if "logits" in out else None
        if decoded is None:
            return self.ctc_transcript(logits, fps)
        d = decoded[i]
        result = {"text": d["text"], "avg_logprob": d["avg_logprob"],
                  "confidence": round(float(np.exp(d["avg_logprob"])), 4), "words": [],
                  "temperature": d.get("temperature"), "compression_ratio": d.get("compression_ratio")}
        if d.get("no_speech_prob") is not None:  # the decoder's own (the VAD head's replaces it)
            result["no_speech_prob"] = d["no_speech_prob"]
        if d.get("loop_cut"):  # the decoder looped at every temperature: the run was said once
            result["loop_cut"] = True
        if d.get("language"):  # detected by a multilingual decoder asked for no language
            result["decoder_language"] = d["language"]
        if logits is not None and not d.get("silence") and aligned:
            from ..ctc import word_times

            logp = logits.float().log_softmax(-1).numpy()
            words = word_times(d["text"], logp, self.config.vocab["text"], fps, speech=speech)
            if words is not None:
                self._give_tokens(self.model.heads[task].tokenizer, d["tokens"], words)
            result["words"] = words if words is not None else self.ctc_transcript(logits, fps)["words"]
        return result

    @staticmethod
    def _give_tokens(tokenizer, tokens: list[int], words: list[dict]) -> None:
        """Each aligned word gets the decoder tokens that spell it: a token belongs to the
        (normalised) word its text ends in, so punctuation joins the word before it."""
        owner = [max(0, len(normalize_text(tokenizer.decode(tokens[:k + 1])).split()) - 1)
                 for k in range(len(tokens))]
        spoken = normalize_text(tokenizer.decode(tokens)).split()
        j = 0
        for w in words:  # in order; word_times skips words with no CTC character (digits)
            while j < len(spoken) - 1 and spoken[j] != w["word"]:
                j += 1
            w["tokens"] = [t for t, o in zip(tokens, owner) if o == j]
            j += 1

    def ctc_transcript(self, logits: torch.Tensor, fps: float) -> dict:
        """Text, timed words and confidence of one item's greedy CTC decoding."""
        vocab = self.config.vocab["text"]
        probs = logits.float().softmax(-1)
        best = probs.argmax(-1).tolist()
        words, cur, start, last, confs = [], "", None, 0, []
        for t, tok in greedy_path(best):
            ch = vocab[tok - 1]
            if ch == " ":
                if cur:
                    words.append({"word": cur, "start": round(start / fps, 2), "end": round(last / fps, 2)})
                cur, start = "", None
            else:
                if start is None:
                    start = t
                cur += ch
                confs.append(float(probs[t, tok]))
            last = t + 1
        if cur:
            words.append({"word": cur, "start": round(start / fps, 2), "end": round(last / fps, 2)})
        return {"text": " ".join(w["word"] for w in words), "words": words,
                "confidence": round(float(np.mean(confs)), 4) if confs else 0.0}

    def speech_segments(self, logits: torch.Tensor, fps: float) -> list[dict]:
        """``[{"start", "end"}]`` seconds of speech in one item's VAD logits."""
        speech = (logits > 0).tolist() + [False]
        segs, start = [], None
        for t, s in enumerate(speech):
            if s and start is None:
                start = t
            elif not s and start is not None:
                segs.append([start, t])
                start = None
        merged = []  # in frames
        for s in segs:
            if merged and (s[0] - merged[-1][1]) / fps < VAD_MERGE_GAP_S:
                merged[-1][1] = s[1]
            else:
                merged.append(s)
        return [{"start": round(a / fps, 2), "end": round(b / fps, 2), "no_speech_prob": no_speech_prob(logits[a:b])}
                for a, b in merged if (b - a) / fps >= MIN_SEGMENT_S]


def words_in(words: list[dict], start: float, end: float, slack: float = 0.1) -> list[dict]:
    """The words of a CTC transcript that begin inside [start, end] (with a little slack for
    frame rounding): how segments get their text."""
    return [w for w in words if start - slack <= w["start"] < end + slack]


def pad_batch(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder inputs of different lengths as one zero-padded batch, and their lengths."""
    batch = np.zeros((len(arrays), max(len(a) for a in arrays), *arrays[0].shape[1:]), dtype=np.float32)
    for i, a in enumerate(arrays):
        batch[i, :len(a)] = a
    return torch.from_numpy(batch), torch.tensor([len(a) for a in arrays])


def _head(model, task: str):
    """A task's head: any head of a PyTorch model; an ONNX export has its decoder's only."""
    heads = getattr(model, "heads", None)
    return heads[task] if heads is not None and task in heads else None


def load(path: str | Path, quantize: str | None = None) -> Polyhead:
    """``polyhead.load(run_or_checkpoint_or_export_folder_or_whisper_name, quantize=None | "int8")``."""
    return Polyhead.load(path, quantize)
