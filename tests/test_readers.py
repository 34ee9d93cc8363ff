"""Readers: tiny corpora in each on-disk layout, built in tmp_path, read into cuts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from polyhead.audio import SAMPLE_RATE, load_audio
from polyhead.data.corpus import ManifestError, Trial, label, read_trials
from polyhead.data.readers import (
    read_corpus, read_kaldi, read_librispeech, read_lhotse, read_nemo, read_voxceleb, voxceleb_id)


def tone(path: Path, seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    """A short sine (plus a little noise) in whatever format the suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(str(path), np.stack([x] * channels, axis=1) if channels > 1 else x, rate)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def by_id(cuts: CutSet) -> dict:
    return {c.id: c for c in cuts}


def skipped_count(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# --- LibriSpeech ------------------------------------------------------------------------------

@pytest.fixture
def librispeech(tmp_path) -> Path:
    root = tmp_path / "LibriSpeech"
    write(root / "SPEAKERS.TXT", "; comment line\n;ID  |SEX| SUBSET | MINUTES | NAME\n"
          "14   | F | test-clean       | 25.03 | Kristin\n16   | M | test-clean | 8.1 | Joe\n")
    split = root / "test-clean"
    tone(split / "14/208/14-208-0000.flac", 0.5)
    tone(split / "14/208/14-208-0001.flac", 0.25)
    write(split / "14/208/14-208.trans.txt", "14-208-0000 HELLO WORLD\n14-208-0001 SECOND ONE\n")
    tone(split / "16/122/16-122-0000.flac", 0.4, rate=8000, channels=2)  # stereo, 8 kHz
    write(split / "16/122/16-122.trans.txt", "16-122-0000 STEREO LOW RATE\n")
    return root


def test_librispeech(librispeech):
    cuts = by_id(read_librispeech(librispeech, "test-clean"))
    assert sorted(cuts) == ["14-208-0000", "14-208-0001", "16-122-0000"]
    c = cuts["14-208-0000"]
    assert [label(c, f) for f in ("text", "speaker", "gender", "language", "session")] == \
        ["HELLO WORLD", "14", "f", "en", "208"]
    assert c.duration == pytest.approx(0.5)
    assert cuts["14-208-0001"].duration == pytest.approx(0.25)
    assert set(c.supervisions[0].custom) >= {"session", "intent", "slots", "phonemes", "voice"}
    stereo = cuts["16-122-0000"]
    assert (label(stereo, "gender"), stereo.duration) == ("m", pytest.approx(0.4))
    assert stereo.load_audio().shape == (2, 3200)  # both channels, native 8 kHz
    samples = load_audio(stereo.recording.sources[0].source)  # polyhead's loader down-mixes
    assert samples.ndim == 1 and samples.size == pytest.approx(0.4 * SAMPLE_RATE, abs=2)
    # a split folder given directly finds SPEAKERS.TXT one level up
    assert label(by_id(read_librispeech(librispeech / "test-clean"))["14-208-0000"], "gender") == "f"


def test_librispeech_missing_audio(librispeech, caplog):
    trans = librispeech / "test-clean/14/208/14-208.trans.txt"
    write(trans, trans.read_text() + "14-208-0002 NOT ON DISK\n")
    with pytest.raises(ManifestError, match=r"14-208\.trans\.txt:3: .*14-208-0002\.flac: audio file not found"):
        read_librispeech(librispeech, "test-clean")
    with caplog.at_level(logging.WARNING):
        cuts = read_librispeech(librispeech, "test-clean", on_error="skip")
    assert len(cuts) == 3 and "skipped 1 bad entry" in skipped_count(caplog)


# --- VoxCeleb ---------------------------------------------------------------------------------

@pytest.fixture
def voxceleb(tmp_path) -> Path:
    root = tmp_path / "vox1"
    for rel in ("id10001/vidA/00001", "id10001/vidA/00002", "id10001/vidB/00001",
                "id10002/vidC/00001"):
        tone(root / "wav" / f"{rel}.wav", 0.2)
    write(root / "vox1_meta.csv", "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
          "id10001\tA.J._Buckley\tm\tIreland\tdev\nid10002\tAaron_Tveit\tf\tUSA\ttest\n")
    write(root / "veri_test2.txt", "1 id10001/vidA/00001.wav id10001/vidB/00001.wav\n"
          "0 id10001/vidA/00002.wav id10002/vidC/00001.wav\n")
    return root


def test_voxceleb_with_trials(voxceleb):
    cuts, trials = read_voxceleb(voxceleb, trials="veri_test2.txt")  # name inside root
    cuts = by_id(cuts)
    assert sorted(cuts) == ["id10001/vidA/00001", "id10001/vidA/00002", "id10001/vidB/00001",
                            "id10002/vidC/00001"]
    c = cuts["id10001/vidB/00001"]
    assert (label(c, "speaker"), label(c, "session"), label(c, "gender"), label(c, "text")) == \
        ("id10001", "vidB", "m", None)
    assert label(cuts["id10002/vidC/00001"], "gender") == "f"
    assert c.duration == pytest.approx(0.2)
    assert trials == [Trial(True, "id10001/vidA/00001", "id10001/vidB/00001"),
                      Trial(False, "id10001/vidA/00002", "id10002/vidC/00001")]
    assert read_voxceleb(voxceleb)[1] is None


def test_voxceleb2_meta_and_converted_m4a(tmp_path):
    root = tmp_path / "vox2"
    tone(root / "dev/aac/id00012/vid/00001.wav", 0.2)
    write(root / "dev/aac/id00012/vid/00001.m4a", "")  # converted in place: the wav is used
    write(root / "vox2_meta.csv", "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00012 ,n000012 ,f ,dev \n")
    cuts, _ = read_voxceleb(root)
    assert [(c.id, label(c, "gender")) for c in cuts] == [("id00012/vid/00001", "f")]


def test_voxceleb_refuses_m4a(voxceleb):
    write(voxceleb / "wav/id10003/vidD/00001.m4a", "")
    with pytest.raises(ManifestError, match=r"00001\.m4a: AAC .*convert"):
        read_voxceleb(voxceleb)


def test_trial_formats_and_errors(voxceleb, tmp_path, caplog):
    kaldi = write(tmp_path / "trials_kaldi", "id10001/vidA/00001 id10001/vidB/00001 target\n"
                  "id10001/vidA/00002 id10002/vidC/00001 nontarget\n")
    assert read_voxceleb(voxceleb, trials=kaldi)[1] == read_voxceleb(voxceleb, "veri_test2.txt")[1]
    assert read_trials(voxceleb / "veri_test2.txt", id_of=voxceleb_id)[0].enrol == "id10001/vidA/00001"
    assert voxceleb_id("wav/id10003/na8-QEFmj44/00002.wav") == "id10003/na8-QEFmj44/00002"

    bad = write(tmp_path / "malformed.txt", "1 id10001/vidA/00001.wav id10001/vidB/00001.wav\n1 only-two\n")
    with pytest.raises(ManifestError, match=r"malformed\.txt:2: expected 3 fields"):
        read_voxceleb(voxceleb, trials=bad)
    unknown = write(tmp_path / "unknown.txt", "1 id10001/vidA/00001.wav id10001/vidB/00001.wav\n"
                    "0 id10001/vidA/00001.wav id19999/x/00001.wav\n")
    with pytest.raises(ManifestError, match=r"unknown\.txt:2: unknown utterance 'id19999/x/00001'"):
        read_voxceleb(voxceleb, trials=unknown)
    with caplog.at_level(logging.WARNING):
        _, trials = read_voxceleb(voxceleb, trials=unknown, on_error="skip")
    assert len(trials) == 1 and "skipped 1 of 2 trials" in skipped_count(caplog)


# --- NeMo -------------------------------------------------------------------------------------

@pytest.fixture
def nemo(tmp_path) -> Path:
    tone(tmp_path / "nemo/audio/a.wav", 0.5)
    tone(tmp_path / "nemo/audio/long.wav", 1.0)
    tone(tmp_path / "elsewhere/b.flac", 0.3, rate=8000, channels=2)
    lines = [
        {"audio_filepath": "audio/a.wav", "duration": 0.5, "text": "hello there", "lang": "en"},
        {"audio_filepath": str(tmp_path / "elsewhere/b.flac"), "duration": 0.3, "label": "spk7"},
        {"audio_filepath": "audio/long.wav", "offset": 0.25, "duration": 0.5, "text": "seg",
         "source_lang": "de"},
    ]
    return write(tmp_path / "nemo/train.json", "".join(json.dumps(x) + "\n" for x in lines))


def test_nemo(nemo, tmp_path):
    cuts = by_id(read_nemo(nemo))
    b_id = str(tmp_path / "elsewhere/b")
    assert sorted(cuts) == sorted(["audio/a", b_id, "audio/long-0000250"])
    a, b, seg = cuts["audio/a"], cuts[b_id], cuts["audio/long-0000250"]
    assert (label(a, "text"), label(a, "language"), label(a, "speaker"), a.duration) == \
        ("hello there", "en", None, pytest.approx(0.5))
    assert (label(b, "speaker"), label(b, "text"), b.duration) == ("spk7", None, pytest.approx(0.3))
    assert (seg.start, seg.duration, label(seg, "language")) == (0.25, 0.5, "de")
    assert seg.load_audio().shape == (1, 8000)


@pytest.mark.parametrize("line, message", [
    ('{"audio_filepath": "audio/a.wav", "duration": 0.5', "malformed JSON"),
    ('{"audio_filepath": "audio/a.wav", "text": "x"}', "missing key.*duration"),
    ('{"audio_filepath": "audio/gone.wav", "duration": 0.5}', "gone.wav: audio file not found"),
    ('{"audio_filepath": "audio/a.wav", "duration": 0.5, "text": "again"}', "duplicate id 'audio/a'"),
    ('{"audio_filepath": "audio/long.wav", "offset": 0.75, "duration": 0.5}', "runs past the end"),
])
def test_nemo_bad_lines(nemo, line, message, caplog):
    write(nemo, nemo.read_text() + line + "\n")
    with pytest.raises(ManifestError, match=rf"train\.json:4: .*{message}"):
        read_nemo(nemo)
    with caplog.at_level(logging.WARNING):
        assert len(read_nemo(nemo, on_error="skip")) == 3
    assert "skipped 1 bad entry" in skipped_count(caplog)


# --- Kaldi ------------------------------------------------------------------------------------

@pytest.fixture
def kaldi(tmp_path) -> Path:
    tone(tmp_path / "audio/r1.wav", 1.0)
    tone(tmp_path / "audio/r2.flac", 0.6, rate=8000, channels=2)
    d = tmp_path / "data/train"
    write(d / "wav.scp", f"r1 {tmp_path}/audio/r1.wav\nr2\t{tmp_path}/audio/r2.flac\n")
    write(d / "segments", "u1 r1 0.0 0.4\nu2 r1 0.5 1.0\nu3 r2 0.1 -1\n")
    write(d / "text", "u1 GOOD MORNING\nu2 good night\nu3\n")
    write(d / "utt2spk", "u1 alice\nu2 bob\nu3 alice\n")
    write(d / "spk2gender", "alice f\nbob m\n")
    write(d / "utt2lang", "u1 en\nu2 en\nu3 fr\n")
    return d


def test_kaldi_segments(kaldi):
    cuts = by_id(read_kaldi(kaldi))
    assert sorted(cuts) == ["u1", "u2", "u3"]
    u1, u2, u3 = cuts["u1"], cuts["u2"], cuts["u3"]
    assert [label(u1, f) for f in ("text", "speaker", "gender", "language")] == \
        ["GOOD MORNING", "alice", "f", "en"]
    assert (label(u2, "speaker"), label(u2, "gender"), u2.start, u2.duration) == \
        ("bob", "m", 0.5, pytest.approx(0.5))
    assert (label(u3, "text"), label(u3, "language"), u3.duration) == ("", "fr", pytest.approx(0.5))
    assert u1.recording.id == u2.recording.id == "r1"


def test_kaldi_without_segments(kaldi):
    (kaldi / "segments").unlink()
    write(kaldi / "utt2spk", "r1 alice\nr2 bob\n")
    (kaldi / "text").unlink()  # speaker-recognition data dirs have no text
    cuts = by_id(read_kaldi(kaldi))
    assert {i: (label(c, "speaker"), label(c, "gender"), label(c, "text")) for i, c in cuts.items()} \
        == {"r1": ("alice", "f", None), "r2": ("bob", "m", None)}
    assert cuts["r2"].duration == pytest.approx(0.6)


@pytest.mark.parametrize("wav_scp, match, kept", [
    ("r1 {root}/audio/r1.wav\nr2 sox {root}/audio/r2.flac -t wav - |\n",
     r"wav\.scp:2: pipe commands are not supported", 1),
    ("r1 {root}/audio/r1.wav\nr2 {root}/audio/missing.wav\n",
     r"wav\.scp:2: .*missing\.wav: audio file not found", 1),
    ("r1 {root}/audio/r1.wav\nr1 {root}/audio/r2.flac\nr2 {root}/audio/r2.flac\n",
     r"wav\.scp:2: duplicate id 'r1'", 2),
])
def test_kaldi_bad_wav_scp(kaldi, wav_scp, match, kept, caplog):
    (kaldi / "segments").unlink()
    write(kaldi / "wav.scp", wav_scp.format(root=kaldi.parent.parent))
    with pytest.raises(ManifestError, match=match):
        read_kaldi(kaldi)
    with caplog.at_level(logging.WARNING):
        assert len(read_kaldi(kaldi, on_error="skip")) == kept
    assert "skipped 1 bad entry" in skipped_count(caplog)


def test_kaldi_bad_segment(kaldi):
    write(kaldi / "segments", "u1 r1 0.0 0.4\nu2 r9 0.0 1.0\n")
    with pytest.raises(ManifestError, match=r"segments:2: recording 'r9' is not in wav\.scp"):
        read_kaldi(kaldi)


# --- unusable audio (shared by all readers) ---------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda p: sf.write(str(p), np.zeros(0), SAMPLE_RATE), "empty audio"),
    (lambda p: p.write_bytes(b"not audio at all"), "not a readable audio file"),
])
def test_unusable_audio(tmp_path, make, match):
    tone(tmp_path / "ok.wav", 0.2)
    make(tmp_path / "bad.wav")
    manifest = write(tmp_path / "m.json", '{"audio_filepath": "ok.wav", "duration": 0.2}\n'
                     '{"audio_filepath": "bad.wav", "duration": 0.2}\n')
    with pytest.raises(ManifestError, match=rf"m\.json:2: .*bad\.wav: {match}"):
        read_nemo(manifest)
    assert len(read_nemo(manifest, on_error="skip")) == 1


def test_everything_skipped_is_an_error(tmp_path):
    manifest = write(tmp_path / "m.json", '{"audio_filepath": "gone.wav", "duration": 1}\n')
    with pytest.raises(ManifestError, match=r"no usable utterances \(1 skipped\)"):
        read_nemo(manifest, on_error="skip")


def test_on_error_must_be_known(nemo):
    with pytest.raises(ValueError, match="on_error"):
        read_nemo(nemo, on_error="ignore")


# --- lhotse -----------------------------------------------------------------------------------

def test_lhotse_cuts_manifest_roundtrip(kaldi, tmp_path):
    cuts = read_kaldi(kaldi)
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    again = by_id(read_lhotse(path))
    assert sorted(again) == ["u1", "u2", "u3"]
    assert label(again["u2"], "speaker") == "bob" and again["u2"].duration == pytest.approx(0.5)


def test_lhotse_recordings_and_supervisions(tmp_path):
    rec = Recording.from_file(tone(tmp_path / "audio/long.wav", 1.0), recording_id="long")
    sups = [SupervisionSegment(id=f"s{i}", recording_id="long", start=0.5 * i, duration=0.4,
                               text=f"part {i}", speaker="x") for i in range(2)]
    folder = tmp_path / "manifests"
    folder.mkdir()
    RecordingSet.from_recordings([rec]).to_file(folder / "demo_recordings.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(folder / "demo_supervisions.jsonl.gz")
    cuts = list(read_lhotse(folder))
    assert [(label(c, "text"), c.start, c.duration, len(c.supervisions)) for c in cuts] == \
        [("part 0", 0.0, 0.4, 1), ("part 1", 0.5, 0.4, 1)]


def test_lhotse_missing_audio_and_duplicates(kaldi, tmp_path, caplog):
    cuts = read_kaldi(kaldi)
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(list(cuts) + [list(cuts)[0]]).to_file(path)
    with pytest.raises(ManifestError, match=r"cuts\.jsonl\.gz: cut 'u1': duplicate id"):
        read_lhotse(path)
    cuts.to_file(path)
    (tmp_path / "audio/r2.flac").unlink()
    with pytest.raises(ManifestError, match=r"cuts\.jsonl\.gz: cut 'u3': .*r2\.flac: audio file not found"):
        read_lhotse(path)
    with caplog.at_level(logging.WARNING):
        assert [c.id for c in read_lhotse(path, on_error="skip")] == ["u1", "u2"]
    assert "skipped 1 bad entry" in skipped_count(caplog)


# --- dispatch ---------------------------------------------------------------------------------

def test_read_corpus_dispatch(librispeech, voxceleb, nemo, kaldi, tmp_path):
    read_kaldi(kaldi).to_file(tmp_path / "cuts.jsonl.gz")
    specs = {f"librispeech:{librispeech / 'test-clean'}": 3, f"voxceleb:{voxceleb}": 4,
             f"nemo:{nemo}": 3, f"kaldi:{kaldi}": 3, f"lhotse:{tmp_path / 'cuts.jsonl.gz'}": 3}
    assert {spec: len(read_corpus(spec)) for spec in specs} == specs
    for bad in ("sphinx:/x", str(kaldi), "kaldi:"):
        with pytest.raises(ValueError, match="<format>:<path>"):
            read_corpus(bad)
