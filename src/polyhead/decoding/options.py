"""``DecodingOptions``: how a decoder head writes its answer, in Whisper's names.

One frozen (hashable) object for every decoding choice: the pipeline groups a batch's
inputs by it, evaluation and the benches pass it down, and nothing mutates the head.
Defaults keep polyhead's decoding as it was: greedy, no length normalisation, no blank
suppression, the CTC branch rescoring finished beams at the head's trained weight.
"""

from __future__ import annotations

from dataclasses import dataclass

# Whisper's decoding safeguards (openai-whisper's transcribe defaults)
WHISPER_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4  # above: a looping transcript, decoded again hotter
LOGPROB_THRESHOLD = -1.0  # below: an unsure transcript, decoded again hotter
NO_SPEECH_THRESHOLD = 0.6  # above (and unsure): silence, no transcript

TRANSCRIBE = "transcribe"
# How the CTC branch joins a beam search: "rescore" picks among the finished hypotheses of an
# attention-only search; "joint" scores every step's candidates with the CTC prefix probability.
CTC_RESCORE, CTC_JOINT = "rescore", "joint"
CTC_MODES = (CTC_RESCORE, CTC_JOINT)

# No speech runs faster than this: a transcript that outgrows its audio is a decoder stuck in a
# loop (Whisper's failure on unfamiliar input), and the batch would wait for it to the limit.
MAX_TOKENS_PER_SECOND = 8.0
MIN_TOKEN_ALLOWANCE = 8

@dataclass(frozen=True)
class DecodingOptions:
    """``language`` forces the language token (None: the head's own, or detected);
    ``prompt`` is Whisper's previous-text prompt; ``temperature`` 0 is greedy, above 0
    samples (``best_of`` samples per row, the most likely kept); a tuple of temperatures
    (``WHISPER_TEMPERATURES``) is Whisper's fallback: a segment is decoded again at the next
    one while its text compresses better than ``compression_ratio_threshold`` or its average
    log-probability is below ``logprob_threshold`` (unless its no-speech probability is above
    ``no_speech_threshold``: silence, which gets no transcript). None turns a threshold off.

    ``beam_size`` > 1: beam search at temperature 0. ``patience``: Whisper's, the search
    stops once round(beam_size * patience) hypotheses have ended (None: once the best ended
    one beats every live one, exact for unnormalised scores). ``length_penalty``: 0 ranks
    the ended hypotheses by their summed log-probabilities (polyhead's default), a > 0 by
    sum / ((5 + n) / 6) ** a, None by sum / n (Whisper's default).

    ``ctc_weight`` (None: the head's trained weight) and ``ctc_mode`` (``rescore`` | ``joint``)
    bring in the head's CTC branch; 0 is attention alone. ``repetition_penalty`` (> 1 lowers
    the log-probability of a token already written by log(penalty)) and
    ``no_repeat_ngram_size`` (n > 0: no n-gram written twice) curb loops.
    ``sample_len``: the most tokens written (None: the head's ``max_new_tokens``).
    ``suppress_blank``: no space or end as the first token (Whisper's; off by default here);
    ``suppress_tokens``: token ids never written. Timestamps are not predicted:
    ``without_timestamps`` must stay True. A CTC-only speech head takes only the defaults."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | tuple[float, ...] = 0.0
    beam_size: int | None = None
    compression_ratio_threshold: float | None = COMPRESSION_RATIO_THRESHOLD
    logprob_threshold: float | None = LOGPROB_THRESHOLD
    no_speech_threshold: float | None = NO_SPEECH_THRESHOLD
    task: str = TRANSCRIBE
    sample_len: int | None = None
    best_of: int | None = None
    patience: float | None = None
    length_penalty: float | None = 0.0
    ctc_weight: float | None = None
    ctc_mode: str = CTC_RESCORE
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    suppress_blank: bool = False
    suppress_tokens: tuple[int, ...] = ()
    without_timestamps: bool = True

    def __post_init__(self):
        if isinstance(self.temperature, (list, tuple)):  # hashable, as decodings group a batch
            object.__setattr__(self, "temperature", tuple(float(t) for t in self.temperature))
        object.__setattr__(self, "suppress_tokens", tuple(int(t) for t in self.suppress_tokens))
        problems = []
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            problems.append(f"temperature: one or more values >= 0, got {self.temperature!r}")
        if self.beam_size is not None and self.beam_size < 1:
            problems.append(f"beam_size: at least 1, got {self.beam_size}")
        if self.best_of is not None and self.best_of < 1:
            problems.append(f"best_of: at least 1, got {self.best_of}")
        if self.beam_size and self.beam_size > 1 and self.best_of and self.best_of > 1:
            problems.append("beam_size and best_of: one or the other (beam search is at temperature 0, "
                            "best_of counts samples)")
        if self.patience is not None and self.patience <= 0:
            problems.append(f"patience: above 0, got {self.patience}")
        if self.patience is not None and not (self.beam_size and self.beam_size > 1):
            problems.append("patience: only with beam_size > 1")
        if self.length_penalty is not None and self.length_penalty < 0:
            problems.append(f"length_penalty: >= 0 or None, got {self.length_penalty}")
        if self.ctc_weight is not None and not 0.0 <= self.ctc_weight < 1.0:
            problems.append(f"ctc_weight: in [0, 1), got {self.ctc_weight}")
        if self.ctc_mode not in CTC_MODES:
            problems.append(f"ctc_mode: one of {', '.join(CTC_MODES)}, got {self.ctc_mode!r}")
        if self.repetition_penalty < 1.0:
            problems.append(f"repetition_penalty: >= 1 (1 is none), got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size: >= 0 (0 is none), got {self.no_repeat_ngram_size}")
        if self.sample_len is not None and self.sample_len < 1:
            problems.append(f"sample_len: at least 1, got {self.sample_len}")
        if not self.without_timestamps:
            problems.append("without_timestamps: must be True (polyhead's decoders predict no timestamps)")
        if not self.task:
            problems.append("task: a decoder task name, e.g. 'transcribe'")
        if problems:
            raise ValueError("decoding options: " + "; ".join(problems))

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The temperatures to try, in order (one: no fallback)."""
        t = self.temperature
        return t if isinstance(t, tuple) else (float(t),)

    @property
    def beams(self) -> int:
        return self.beam_size or 1


GREEDY = DecodingOptions()
