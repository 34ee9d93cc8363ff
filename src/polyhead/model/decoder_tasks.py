"""What Whisper's decoder head can be asked to write, and the text formats it writes.

A decoder head trains the tasks listed in its ``decoder_tasks`` option (default
``[transcribe]``, Whisper's own task); each is chosen by a task token in the prompt:

    transcribe  <|sot|> <|en|> <|transcribe|> <|notimestamps|> Set an alarm.
    translate   <|sot|> <|de|> <|translate|> <|notimestamps|> The dog is big.   (multilingual only)
    slu         <|sot|> <|en|> <|slu|> <|notimestamps|> set_alarm | time = seven am
    speakers    <|sot|> <|en|> <|speakers|> <|notimestamps|> <|spk1|> Hi. <|spk2|> Hello.
    language    <|sot|> <|de|>          (the language token is the answer; multilingual only)

English-only models have no language token, so their prompts are ``<|sot|> [task]
<|notimestamps|>`` (transcribe without a task token, as Whisper's). A multilingual model's
prompt carries each row's own language: the language spoken, also when translating (Whisper's
``<|translate|>`` writes English from any language; a pretrained multilingual model can do it
zero-shot, so it needs no training to be asked). ``<|slu|>``,
``<|speakers|>`` and ``<|spkN|>`` are added to the tokenizer and the embedding table by the
head. Speakers are numbered in order of first appearance and turns are written in order of
start time, overlaps included (serialized output training, Kanda et al. 2020), with a
speaker token wherever the speaker changes.

The training data (which cuts serve which task) is built by the ``whisper_decoder`` task kind
(``tasks/``); this module is the one home of the formats, shared by training targets,
evaluation and inference.
"""

from __future__ import annotations

import re

TRANSCRIBE, TRANSLATE, SLU, SPEAKERS, LANGUAGE = "transcribe", "translate", "slu", "speakers", "language"
DECODER_TASKS = (TRANSCRIBE, TRANSLATE, SLU, SPEAKERS, LANGUAGE)
# the prompt's task token; the language task has none (its answer is the language token)
TASK_TOKENS = {TRANSCRIBE: "<|transcribe|>", TRANSLATE: "<|translate|>", SLU: "<|slu|>", SPEAKERS: "<|speakers|>"}
WHISPER_TASKS = (TRANSCRIBE, TRANSLATE)  # pretrained Whisper's own: its tokens need no new rows
INTENT_SEP, SLOT_SEP, VALUE_SEP = "|", ";", "="  # slot values are words: none of these occur
SPEAKER_TOKEN = re.compile(r"<\|spk(\d+)\|>")  # split() gives text, number, text, ...


def speaker_token(i: int) -> str:
    """The token of the i-th speaker to appear (1-based)."""
    return f"<|spk{i}|>"


def decoder_tasks_of(head_options: dict) -> list[str]:
    """The decoder tasks a head's options name, checked; ``[transcribe]`` when none are."""
    tasks = list(head_options.get("decoder_tasks") or [TRANSCRIBE])
    unknown = sorted(set(tasks) - set(DECODER_TASKS))
    if unknown:
        raise ValueError(f"decoder_tasks: unknown {unknown}; choose from {list(DECODER_TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"decoder_tasks: {tasks} names a task twice")
    return tasks


# --- slu: intent and slots ------------------------------------------------------------------

def slu_text(intent: str, slots: dict[str, str] | None) -> str:
    """``set_alarm | time = seven am ; date = tomorrow``; slots in the order given."""
    pairs = f" {SLOT_SEP} ".join(f"{k} {VALUE_SEP} {' '.join(str(v).split())}" for k, v in (slots or {}).items())
    return f"{intent} {INTENT_SEP} {pairs}" if pairs else intent


def parse_slu(text: str) -> tuple[str, dict[str, str]]:
    """(intent, slots) from what the decoder wrote; malformed slots are dropped, a repeated
    slot keeps its first value."""
    intent, _, rest = text.partition(INTENT_SEP)
    slots: dict[str, str] = {}
    for piece in rest.split(SLOT_SEP):
        key, sep, value = piece.partition(VALUE_SEP)
        key, value = key.strip(), " ".join(value.split())
        if sep and key and value:
            slots.setdefault(key, value)
    return intent.strip(), slots


# --- speakers: the transcript with speaker-change tokens -------------------------------------

def speakers_text(turns: list[tuple[str, str]]) -> str:
    """``<|spk1|> text <|spk2|> text ...`` from (speaker, text) turns in time order."""
    number: dict[str, int] = {}
    out, last = [], None
    for speaker, text in turns:
        number.setdefault(speaker, len(number) + 1)
        if speaker != last:
            out.append(speaker_token(number[speaker]))
            last = speaker
        out.append(" ".join(text.split()))
    return " ".join(out)


def parse_speakers(text: str) -> list[tuple[int, str]]:
    """(speaker number, text) turns from what the decoder wrote; text before the first
    speaker token belongs to speaker 1."""
    pieces = SPEAKER_TOKEN.split(text)
    turns = [(1, pieces[0])] + [(int(n), t) for n, t in zip(pieces[1::2], pieces[2::2])]
    return [(n, " ".join(t.split())) for n, t in turns if t.strip()]
