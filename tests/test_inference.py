"""Inference: one-pass analysis, verification, the speaker registry, long-form transcription
by speaker and its output formats, on a tiny model trained for a few steps."""

import json
import threading

import numpy as np
import pytest

from polyhead.cli import main
from polyhead.inference import load
from polyhead.inference.diarize import MAX_PIECE_S, read_chunks, split_segment, transcribe
from polyhead.inference.formats import render, to_srt, to_vtt
from polyhead.inference.registry import UNKNOWN, SpeakerRegistry


def test_verify_uses_the_calibrated_threshold(tiny_run):
    folder, run = tiny_run
    cal = json.loads((run / "calibration.json").read_text())
    model = load(run)
    assert model.threshold == pytest.approx(cal["verify_threshold"])
    wavs = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))
    same = model.verify(wavs[0], wavs[0])
    assert same["score"] == pytest.approx(1.0, abs=1e-4)
    # decided on the AS-normed score where evaluate saved a cohort (tests/test_snorm.py), else raw
    assert model.snorm is not None and same["decided_on"] == "snorm"
    assert same["same_speaker"] is (same["score_snorm"] >= cal["verify_threshold_snorm"])


def test_vad_threshold_is_picked_on_dev_and_used_everywhere(tiny_run, monkeypatch):
    """`polyhead evaluate` picks the VAD head's logit threshold on vad_dev (best frame F1),
    scores vad_test at it, and loading the run for inference applies it."""
    from polyhead.data.corpus import load_set
    from polyhead.tasks import frame as ev

    folder, run = tiny_run
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["vad_set"] == "vad_dev" and cal["vad_threshold"] in ev.VAD_THRESHOLDS
    model = load(run)
    head = model.model.heads["vad"]
    assert head.threshold == pytest.approx(cal["vad_threshold"])
    scored = json.loads((run / "metrics.json").read_text())["results"]["vad_test"]["vad"]["f1"]
    assert ev.evaluate_vad(model.model, list(load_set(folder, "vad_test")), "vad")["f1"] == pytest.approx(scored)
    # the pick itself: the threshold of best F1, the one nearest 0 among equals
    refs = np.array([0, 0, 1, 1, 1, 0], dtype=bool)
    logits = np.array([1.5, 0.5, 3.0, 2.5, 2.0, -1.0])
    monkeypatch.setattr(ev, "vad_frames", lambda *a: (refs, logits))
    assert ev.vad_threshold(None, [], "vad") == (1.5, 1.0)


def test_registry_enroll_identify_and_unknown(tmp_path):
    reg = SpeakerRegistry(tmp_path / "spk.sqlite")
    a, b = np.eye(4)[0], np.eye(4)[1]
    assert reg.enroll("alice", [a, a + 0.01]) == 2
    reg.enroll("bob", [b])
    assert reg.identify(a + 0.05, threshold=0.5)["speaker"] == "alice"
    res = reg.identify(np.eye(4)[2], threshold=0.5)
    assert res["speaker"] == UNKNOWN and len(res["candidates"]) == 2
    with pytest.raises(ValueError):
        reg.enroll("", [a])


def test_registry_concurrent_enrolments_lose_nothing(tmp_path):
    path = tmp_path / "spk.sqlite"
    SpeakerRegistry(path)

    def worker(k):
        reg = SpeakerRegistry(path)
        for i in range(20):
            reg.enroll(f"s{k}", [np.random.default_rng(k * 100 + i).normal(size=8)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    import sqlite3

    n = sqlite3.connect(path).execute("SELECT COUNT(*) FROM enrolment").fetchone()[0]
    assert n == 80 and set(SpeakerRegistry(path).speakers()) == {"s0", "s1", "s2", "s3"}


def test_transcribe_conversation_by_speaker(tiny_run):
    folder, run = tiny_run
    wav = next((folder / "audio" / "conversations_test").glob("*.wav"))
    res = transcribe(load(run), wav, num_speakers=2)
    assert res["duration"] > 5
    for seg in res["segments"]:
        assert 0 <= seg["start"] <= seg["end"] <= res["duration"] + 0.1
        assert seg["speaker"].startswith("SPEAKER_")
    assert len(res["speakers"]) <= 2


def test_segments_are_cut_at_word_pauses_and_into_short_pieces():
    words = [{"word": "a", "start": 0.2, "end": 0.6}, {"word": "b", "start": 0.7, "end": 1.0},
             {"word": "c", "start": 2.0, "end": 2.4}]
    pieces = split_segment({"start": 0.0, "end": 2.5}, words)
    # the 1.0 s pause between "b" and "c" is a cut (in its middle); the 0.1 s gap is not
    assert [(p["start"], p["end"]) for p in pieces] == [(0.0, 1.5), (1.5, 2.5)]
    assert [[w["word"] for w in p["words"]] for p in pieces] == [["a", "b"], ["c"]]
    # a word starting just after a uniform cut belongs to one piece only, never to both
    near = split_segment({"start": 0.0, "end": 2 * MAX_PIECE_S}, [{"word": "x", "start": MAX_PIECE_S + 0.05,
                                                                  "end": MAX_PIECE_S + 0.3}])
    assert sum(len(p["words"]) for p in near) == 1
    long = split_segment({"start": 10.0, "end": 10.0 + 3.5 * MAX_PIECE_S}, [])
    assert len(long) == 4 and long[0]["start"] == 10.0 and long[-1]["end"] == 10.0 + 3.5 * MAX_PIECE_S
    assert all(p["end"] - p["start"] <= MAX_PIECE_S + 1e-9 for p in long)


def test_read_chunks_bounds_memory_and_covers_the_file(tmp_path):
    import soundfile as sf

    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 65, np.float32), 16000)
    chunks = list(read_chunks(path, chunk_s=30.0))
    assert [round(o) for o, _, _ in chunks] == [0, 30, 60]
    assert [last for _, _, last in chunks] == [False, False, True]
    assert max(len(x) for _, x, _ in chunks) == 16000 * 30
    assert sum(len(x) for _, x, _ in chunks) == 16000 * 65
    # told that only 12.5 s of a chunk were used, the next chunk starts there
    used = [None]
    offsets = []
    for offset, _, _ in read_chunks(path, chunk_s=30.0, feedback=used):
        offsets.append(offset)
        used[0] = 12.5 if offset == 0 else None
    assert offsets == [0, 12.5, 42.5]


def test_formats():
    segs = [{"start": 0.5, "end": 3661.25, "speaker": "SPEAKER_00", "text": "hello there", "words": []}]
    srt = to_srt(segs)
    assert srt.startswith("1\n00:00:00,500 --> 01:01:01,250\n[SPEAKER_00] hello there")
    vtt = to_vtt(segs)
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 01:01:01.250")
    rttm = render({"segments": segs}, "rttm", uri="my file")
    assert rttm == "SPEAKER my_file 1 0.500 3660.750 <NA> <NA> SPEAKER_00 <NA> <NA>\n"
    with pytest.raises(ValueError, match="unknown format"):
        render({"segments": segs}, "docx")


def test_cli_analyze_verify_enroll_identify_transcribe(tiny_run, tmp_path, capsys):
    folder, run = tiny_run
    wavs = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))
    assert main(["analyze", str(wavs[0]), "--model", str(run)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(str(wavs[0])) and "language: " in summary and "transcript: " in summary
    assert main(["analyze", str(wavs[0]), "--model", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "text" in out and "language" in out and "speaker_embedding" not in out
    assert main(["verify", str(wavs[0]), str(wavs[1]), "--model", str(run)]) == 0
    assert "same_speaker" in json.loads(capsys.readouterr().out)
    reg = str(tmp_path / "r.sqlite")
    assert main(["enroll", "alice", str(wavs[0]), "--model", str(run), "--registry", reg]) == 0
    capsys.readouterr()
    assert main(["identify", str(wavs[0]), "--model", str(run), "--registry", reg]) == 0
    assert json.loads(capsys.readouterr().out)["speaker"] == "alice"
    conv = next((folder / "audio" / "conversations_test").glob("*.wav"))
    assert main(["transcribe", str(conv), "--model", str(run), "--speakers", "--format", "json",
                 "--num-speakers", "2"]) == 0
    segments = json.loads(capsys.readouterr().out)["segments"]
    assert main(["transcribe", str(conv), "--model", str(run), "--speakers", "--format", "srt",
                 "--num-speakers", "2"]) == 0
    srt = capsys.readouterr().out
    # an untrained VAD head may find no speech; every segment it does find is one SRT cue
    assert srt.count("-->") == len(segments)
    assert main(["analyze", str(tmp_path / "missing.wav"), "--model", str(run)]) == 2
    assert "missing.wav" in capsys.readouterr().err


def _assert_same_analysis(single: dict, batched: dict, tol: float = 1e-4):
    """Equal strings, lists and keys; numbers within ``tol`` (padding changes float rounding)."""
    if isinstance(single, dict):
        assert single.keys() == batched.keys()
        for k in single:
            _assert_same_analysis(single[k], batched[k], tol)
    elif isinstance(single, list):
        assert len(single) == len(batched)
        for a, b in zip(single, batched):
            _assert_same_analysis(a, b, tol)
    elif isinstance(single, float):
        assert batched == pytest.approx(single, abs=tol)
    else:
        assert single == batched


def test_analyze_batch_equals_one_at_a_time(tiny_run):
    folder, run = tiny_run
    model = load(run)
    wavs = sorted((folder / "audio" / "speech_test").rglob("*.wav"))[:3]
    conversation = next((folder / "audio" / "conversations_test").glob("*.wav"))
    inputs = [*wavs, conversation]  # lengths differ: every item but the longest is padded
    batched = model.analyze_batch(inputs)
    assert len(batched) == len(inputs)
    for path, result in zip(inputs, batched):
        _assert_same_analysis(model.analyze(path), result)
    assert model.analyze_batch([]) == []


def test_speech_open_at_a_chunk_end_goes_to_the_next_chunk():
    from polyhead.inference.diarize import EDGE_S, open_at_end

    assert open_at_end([{"start": 2.0, "end": 5.0}, {"start": 20.0, "end": 30.0 - EDGE_S / 2}], 30.0) == 20.0
    assert open_at_end([{"start": 2.0, "end": 5.0}], 30.0) is None  # silence at the end
    assert open_at_end([{"start": 0.0, "end": 30.0}], 30.0) is None  # fills the chunk: cut it
    assert open_at_end([], 30.0) is None


def test_long_utterances_are_cut_where_speech_is_least_likely():
    import torch

    from polyhead.inference.diarize import MAX_UTTERANCE_S, utterances

    fps = 50.0
    vad = torch.full((int(20 * fps),), 5.0)
    vad[int(6.0 * fps)] = -3.0  # the likeliest pause of a 20 s stretch without CTC pauses
    units = utterances([{"start": 0.0, "end": 20.0}], vad, fps)
    assert units[0] == {"start": 0.0, "end": 6.0}
    assert all(u["end"] - u["start"] <= MAX_UTTERANCE_S for u in units)
    assert units[-1]["end"] == 20.0 and all(a["end"] == b["start"] for a, b in zip(units, units[1:]))
    # without a VAD head: halved until short enough
    assert [(u["start"], u["end"]) for u in utterances([{"start": 0.0, "end": 12.0}])] == [(0.0, 6.0), (6.0, 12.0)]


def test_a_looping_transcript_is_told_from_language():
    from polyhead.inference.diarize import MAX_COMPRESSION_RATIO, compression_ratio

    assert compression_ratio("in " * 33) > MAX_COMPRESSION_RATIO
    assert compression_ratio("my aunt fixed the careful bicycle because kimberly stayed nervously") < MAX_COMPRESSION_RATIO
