"""Teachers trained on real voices, distilled into the heads (issue 24).

The speaker head learns the synthetic corpus's voices, not people; the VAD head learns the
generator's silences. Two peers whose weights ship in their wheels heard real speech, and
each becomes a training strategy registered with the forgetting-control ones
(``retention.RETENTION``), chosen by ``train.retention``:

    speaker_teacher  resemblyzer's utterance embeddings: the speaker head's cosine-similarity
                     matrix over a batch is pulled towards the teacher's (relational
                     distillation; no speaker labels needed)
    vad_teacher      silero-vad's speech probabilities (one per 32 ms), resampled onto the VAD
                     head's frames: soft targets for its logits

A teacher hears the whole cut (an utterance, a recording), once: its output is cached per cut
id in the run folder (``teachers/<model>/``) or in ``cache``, a folder several runs share.
Running resemblyzer on every step would cost more than the step on CPU, and the random crops
the heads see are redrawn every step, so a cache keyed on the crop would never hit. The
speaker teacher's target is the whole utterance's embedding (the speaker, heard best); the VAD
teacher's probabilities are cut at the row's crop offset, so they line up with its frames.

``extra_sets``: corpus sets whose audio the teacher alone labels (no labels of the task's
needed: ``speech_train`` for VAD, unlabelled speech for the speaker head), a cropped batch of
them every ``extra_every`` steps of the task, with the teacher loss only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import SAMPLE_RATE, AudioError, to_model_audio
from ..data.corpus import load_set
from ..tasks import collator, task_kinds
from .retention import RETENTION, Retention

log = logging.getLogger(__name__)

TEACHER_CACHE = "teachers"  # run sub-folder: one folder per teacher model
SILERO_HOP = 512 / SAMPLE_RATE  # silero-vad scores 512-sample chunks at 16 kHz: 32 ms


# --- the teacher models: factories of functions of 16 kHz mono samples ----------------------

def resemblyzer_model() -> Callable[[np.ndarray], np.ndarray | None]:
    """samples -> resemblyzer's 256-d unit embedding, None where its front end keeps no voice."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)

    def embed(samples: np.ndarray) -> np.ndarray | None:
        with np.errstate(all="ignore"):  # its volume normalisation divides by 0 on silence
            wav = preprocess_wav(samples, source_sr=SAMPLE_RATE)  # its own trimming and levels
            if wav.size == 0 or not np.isfinite(wav).all():
                return None
            e = encoder.embed_utterance(wav)
        return e if np.isfinite(e).all() and np.linalg.norm(e) > 0 else None
    return embed


def silero_model() -> Callable[[np.ndarray], np.ndarray]:
    """samples -> silero-vad's speech probability per 32 ms chunk (the JIT model in its wheel)."""
    from silero_vad import load_silero_vad

    model = load_silero_vad()

    def probabilities(samples: np.ndarray) -> np.ndarray:
        with torch.no_grad():  # audio_forward resets its state first: recordings stay apart
            return model.audio_forward(torch.from_numpy(np.ascontiguousarray(samples)), SAMPLE_RATE)[0].numpy()
    return probabilities


SPEAKER_MODELS: dict[str, Callable] = {"resemblyzer": resemblyzer_model}
VAD_MODELS: dict[str, Callable] = {"silero": silero_model}
HOPS = {"silero": SILERO_HOP}  # seconds per probability of each VAD model


# --- the cache ---------------------------------------------------------------------------------

def cut_samples(cut) -> np.ndarray:
    """The cut's audio as the model hears it: 16 kHz mono float."""
    audio = cut.load_audio()
    return to_model_audio(audio.T if audio.ndim == 2 else audio, cut.sampling_rate, name=cut.id)


def file_name(key: str) -> str:
    """A file name for a cut id: readable, and a hash keeps ids that differ only in odd
    characters apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:80]
    return f"{safe}.{hashlib.sha1(key.encode()).hexdigest()[:8]}.npy"


class TeacherCache:
    """A teacher's output per cut id: in memory, and one .npy per cut under ``folder``, so a
    resumed run, or another run given the same folder, computes none of them again. An empty
    array records "the teacher had nothing to say" (an embedding of silence)."""

    def __init__(self, folder: Path, compute: Callable[[np.ndarray], np.ndarray | None]):
        self.folder, self.compute = Path(folder), compute
        self.memory: dict[str, np.ndarray] = {}
        self.computed = 0  # cuts the teacher ran on in this process

    def get(self, cut) -> np.ndarray | None:
        if cut.id not in self.memory:
            path = self.folder / file_name(cut.id)
            if path.is_file():
                value = np.load(path)
            else:
                try:
                    out = self.compute(cut_samples(cut))
                except AudioError as e:
                    log.warning("teacher: %s", e)
                    out = None
                self.computed += 1
                value = np.zeros(0, np.float32) if out is None else np.asarray(out, np.float32)
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # ranks may write the same id
                with open(tmp, "wb") as f:
                    np.save(f, value)
                os.replace(tmp, path)
            self.memory[cut.id] = value
        value = self.memory[cut.id]
        return value if value.size else None


# --- the losses ----------------------------------------------------------------------------

SIMILARITY_LOSSES = ("kl", "mse")


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "kl",
                    temperature: float = 0.1) -> torch.Tensor:
    """How far the students' pairwise cosine similarities are from the teacher's, over the
    off-diagonal pairs of a batch ([B, D_s] and [B, D_t]; the widths may differ).

    ``mse``: mean squared difference of the cosines. ``kl``: mean over rows of KL(teacher ||
    student) between the softmaxes of each row's cosines at ``temperature`` (scaled by T^2):
    only which utterances a row finds closer matters, not the cosines' level, and resemblyzer's
    cosines (non-negative embeddings, ~0.5-0.9) sit far above an AAM-trained head's (~0 for
    different speakers), so matching them outright would fight the head's own loss.
    Zero when both agree; fewer than two rows give a zero that keeps the graph."""
    if kind not in SIMILARITY_LOSSES:
        raise ValueError(f"speaker_teacher: loss must be one of {', '.join(SIMILARITY_LOSSES)}, not {kind!r}")
    n = len(student)
    if n < 2:
        return student.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)

    def cosines(x):
        x = F.normalize(x.float(), dim=-1)
        return (x @ x.T)[off].view(n, n - 1)

    s, t = cosines(student), cosines(teacher.to(student.device))
    if kind == "mse":
        return F.mse_loss(s, t)
    return F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                    log_target=True, reduction="batchmean") * temperature ** 2


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over kept frames of KL(Bernoulli(target) || Bernoulli(sigmoid(logit))): binary
    cross-entropy with soft targets less the targets' own entropy (same gradient), so it
    reads 0 where the head agrees with the teacher."""
    x, p = logits[keep].float(), targets[keep].float()
    if not x.numel():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(x, p) - F.binary_cross_entropy(p, p)


def to_head_frames(probs: np.ndarray, hop: float, start: float, n: int, fps: float) -> np.ndarray:
    """The teacher's probabilities (one per ``hop`` s from the cut's start) at the centres of
    ``n`` head frames (``fps`` per second) of a crop that starts ``start`` s into the cut:
    linear between the teacher's chunk centres, its first and last value beyond them."""
    times = start + (np.arange(n) + 0.5) / fps
    centres = (np.arange(len(probs)) + 0.5) * hop
    return np.interp(times, centres, probs).astype(np.float32)


# --- the strategies ------------------------------------------------------------------------

class Teacher(Retention, ABC):
    """What both teachers share: the task they teach (the first whose kind ``teaches``, or
    ``task``), the cached teacher model, and the optional batches of ``extra_sets``."""

    models: dict[str, Callable] = {}
    name = "teacher"

    def __init__(self, weight: float = 1.0, model: str = "", cache: str | None = None, task: str | None = None,
                 extra_sets: list[str] | tuple = (), extra_every: int = 1, extra_max_duration: float | None = None):
        if model not in self.models:
            raise ValueError(f"{self.name}: model must be one of {', '.join(self.models)}, not {model!r}")
        self.weight, self.model, self.cache_dir, self.task = weight, model, cache, task
        self.extra_sets, self.extra_every, self.extra_max_duration = list(extra_sets), extra_every, extra_max_duration
        self.stream = None

    @abstractmethod
    def teaches(self, kind) -> bool:
        """Whether this teacher can teach a task of this kind (its head and target)."""

    def setup(self, trainer) -> None:
        kinds = {k.name: k for k in task_kinds(trainer.config)}
        if self.task is None:
            self.task = next((n for n, k in kinds.items() if self.teaches(k)), None)
        if self.task not in kinds or not self.teaches(kinds[self.task]):
            raise ValueError(f"{self.name}: no task for it to teach (task={self.task!r})")
        folder = Path(self.cache_dir) if self.cache_dir else trainer.run_dir / TEACHER_CACHE / self.model
        self.cache = TeacherCache(folder, self.models[self.model]())
        self.rate = trainer.cache.features.rate  # input frames (or samples) per second
        if self.extra_sets:
            self._extra_stream(trainer)

    def _extra_stream(self, trainer) -> None:
        from lhotse import CutSet

        from .loader import make_stream

        config, tc = trainer.config, trainer.config.train
        task = config.tasks[self.task]
        cuts = CutSet.from_cuts(c for s in self.extra_sets for c in load_set(config.corpus, s) if c.duration > 0)
        self.stream = make_stream(tc, cuts, collator([], trainer.cache, crop=task.crop), self.extra_max_duration
                                  or task.max_duration or tc.max_duration, tc.seed + 104729, crop=task.crop,
                                  rank=trainer.dist.rank, world_size=trainer.dist.world_size)
        trainer.streams[f"{self.task}/{self.name}"] = self.stream  # saved, resumed and closed with the others

    def extra_loss(self, trainer, task, out, batch):
        if task != self.task:
            return {}
        terms = {self.name: self.weight * self.loss(out[task], batch)}
        if self.stream is not None and trainer.step % self.extra_every == 0:
            b = self.stream.next(trainer.step).to(trainer.device)
            with trainer._autocast():
                extra = trainer.model(b.inputs, b.lengths, [task],
                                      freeze_encoder=trainer.step < trainer.config.train.heads_only_steps)[task]
            terms[f"{self.name}_extra"] = self.weight * self.loss(extra, b)
        return terms

    @abstractmethod
    def loss(self, out: dict, batch) -> torch.Tensor:
        """The distillation term of the task's head output ``out`` on ``batch``."""

    def finish(self, trainer) -> dict | None:
        return {"model": self.model, "cache": str(self.cache.folder), "computed": self.cache.computed}


@RETENTION.register("speaker_teacher")
class SpeakerTeacher(Teacher):
    """The speaker head's similarity structure from resemblyzer's: ``loss`` kl (default) or
    mse at ``temperature`` (``similarity_loss``), over the batch rows the teacher embedded."""

    models = SPEAKER_MODELS
    name = "speaker_teacher"

    def __init__(self, weight: float = 1.0, model: str = "resemblyzer", loss: str = "kl",
                 temperature: float = 0.1, **options):
        if loss not in SIMILARITY_LOSSES:
            raise ValueError(f"speaker_teacher: loss must be one of {', '.join(SIMILARITY_LOSSES)}, not {loss!r}")
        super().__init__(weight, model, **options)
        self.kind, self.temperature = loss, temperature

    def teaches(self, kind) -> bool:
        return kind.embeds

    def loss(self, out: dict, batch) -> torch.Tensor:
        student = out["embedding"]
        rows, targets = [], []
        for i, cut in enumerate(batch.cuts):
            e = self.cache.get(cut)
            if e is not None:
                rows.append(i)
                targets.append(e)
        if len(rows) < 2:
            return student.sum() * 0.0
        teacher = torch.from_numpy(np.stack(targets))
        return similarity_loss(student[rows], teacher, self.kind, self.temperature)


@RETENTION.register("vad_teacher")
class VadTeacher(Teacher):
    """The VAD head's frames against silero-vad's speech probabilities (``soft_target_loss``),
    over the audio of each row (its padding left out)."""

    models = VAD_MODELS
    name = "vad_teacher"

    def __init__(self, weight: float = 1.0, model: str = "silero", **options):
        super().__init__(weight, model, **options)

    def teaches(self, kind) -> bool:
        return kind.detects_speech

    def loss(self, out: dict, batch) -> torch.Tensor:
        logits, fps = out["logits"], float(out["frames_per_second"])
        targets = torch.zeros(logits.shape, dtype=torch.float32)
        keep = torch.zeros(logits.shape, dtype=torch.bool)
        hop = HOPS.get(self.model, SILERO_HOP)
        for i, cut in enumerate(batch.cuts):
            probs = self.cache.get(cut)
            if probs is None:
                continue
            # the row's frames that hold audio (an encoder padded to a window has more)
            seconds = float(batch.lengths[i]) / self.rate
            n = min(int(out["lengths"][i]), int(np.ceil(seconds * fps)), logits.shape[1])
            start = batch.offsets[i] if batch.offsets else 0.0
            targets[i, :n] = torch.from_numpy(to_head_frames(probs, hop, start, n, fps))
            keep[i, :n] = True
        return soft_target_loss(logits, targets.to(logits.device), keep.to(logits.device))
