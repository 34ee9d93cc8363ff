"""Conversations of voices and channels no model here trained on, for diarization and
speaker-attributed transcription (issue 24): turns of the corpus's ``ood_test`` utterances
(flite, festival and piper voices; the training engines are espeak-ng and MBROLA), two or
three speakers recorded from different people per recording, every second recording through a
telephone line. Writes a corpus folder with one set, ``conversations_ood_test``, that
``bench/pipeline_peer.py`` scores against the stack (silero-vad + faster-whisper + resemblyzer):

    .venv/bin/python bench/ood_conversations.py --corpus corpora/demo --out bench/out/ood_conversations
    OMP_NUM_THREADS=2 .venv/bin/python bench/pipeline_peer.py --run runs/demo/multitask \\
        --corpus bench/out/ood_conversations --set conversations_ood_test --system polyhead peer

The same --seed gives the same recordings. Turns do not overlap; pauses are 0.3-1.2 s, the
first turn starts after 0.5-2 s.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from polyhead.audio import SAMPLE_RATE, load_audio, save_audio
from polyhead.data.corpus import MANIFEST_DIR, load_set
from polyhead.data.synth import channel as chan

SET = "conversations_ood_test"
PAUSE_S = (0.3, 1.2)
LEAD_S = (0.5, 2.0)


def person(voice: str) -> str:
    """The person an engine's voice was recorded from: flite's kal16 and festival's kal_diphone
    are both Kal, so one conversation never holds both as two speakers."""
    return re.sub(r"\d+$", "", voice.split(":")[-1].removesuffix("_diphone"))


def speakers_by_person(cuts) -> dict[str, dict[str, list]]:
    """recorded person -> speaker (a voice with its profile) -> that speaker's cuts."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for c in cuts:
        s = c.supervisions[0]
        out[person(s.custom["voice"])][s.speaker].append(c)
    return out


def build(corpus: str, out: Path, count: int, seed: int, source: str = "ood_test") -> CutSet:
    rng = np.random.default_rng(seed)
    voices = speakers_by_person(load_set(corpus, source))
    names = sorted(voices)
    recordings, supervisions = [], []
    for r in range(count):
        k = 2 + r % 2  # two, then three speakers
        chosen = [names[i] for i in rng.choice(len(names), size=k, replace=False)]
        spk_cuts = {}
        for v in chosen:  # one speaker of each chosen person
            speakers = sorted(voices[v])
            spk = speakers[int(rng.integers(len(speakers)))]
            spk_cuts[spk] = list(voices[v][spk])
        # turns: round-robin in a random speaker order, each speaker's utterances in order
        order = list(spk_cuts)
        rng.shuffle(order)
        turns = []
        while any(spk_cuts.values()):
            for spk in order:
                if spk_cuts[spk]:
                    turns.append((spk, spk_cuts[spk].pop(0)))
        telephone = r % 2 == 1
        rec_id = f"conv_ood_{r:03d}"
        pieces = [np.zeros(int(rng.uniform(*LEAD_S) * SAMPLE_RATE), np.float32)]
        t = len(pieces[0]) / SAMPLE_RATE
        for i, (spk, cut) in enumerate(turns):
            x = load_audio(cut.recording.sources[0].source)
            sup = cut.supervisions[0]
            supervisions.append(SupervisionSegment(
                id=f"{rec_id}-{i:02d}", recording_id=rec_id, start=round(t, 4), duration=round(len(x) / SAMPLE_RATE, 4),
                text=sup.text, language=sup.language, speaker=spk, gender=sup.gender,
                custom={"voice": sup.custom["voice"], "engine": sup.custom["engine"], "source": cut.id}))
            pause = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)
            pieces += [x, pause]
            t += (len(x) + len(pause)) / SAMPLE_RATE
        y = np.concatenate(pieces)
        if telephone:
            y = chan.telephone(y, rng)
        path = out / "audio" / SET / f"{rec_id}.wav"
        save_audio(path, y)
        rec = Recording.from_file(path, recording_id=rec_id)
        rec.sources[0].source = str(path.relative_to(out))  # relative to the corpus folder, as load_set reads it
        recordings.append(rec)
    recs, sups = RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions)
    manifests = out / MANIFEST_DIR
    manifests.mkdir(parents=True, exist_ok=True)
    recs.to_file(manifests / f"{SET}_recordings.jsonl.gz")
    sups.to_file(manifests / f"{SET}_supervisions.jsonl.gz")
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    cuts.to_file(manifests / f"{SET}_cuts.jsonl.gz")
    return cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "ood_conversations")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cuts = build(args.corpus, args.out.resolve(), args.count, args.seed)
    info = {"recordings": len(cuts), "audio_s": round(sum(c.duration for c in cuts), 1),
            "turns": sum(len(c.supervisions) for c in cuts),
            "speakers": sorted({len({s.speaker for s in c.supervisions}) for c in cuts}),
            "voices": sorted({s.custom["voice"] for c in cuts for s in c.supervisions})}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
