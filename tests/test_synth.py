"""The offline corpus synthesiser: the `tiny` preset built twice (same seed), then checked for
determinism, layout, audio, splits, trial lists, labels and long recordings. Larger presets
are only planned (cheap), never synthesised."""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polyhead.audio import SAMPLE_RATE, load_audio
from polyhead.data.corpus import CORPUS_INFO, MANIFEST_DIR, load_set, read_info, read_trials
from polyhead.data.stats import set_stats
from polyhead.data.synth import build, engines, nonspeech
from polyhead.data.synth.build import OOD_ENGINES, PRESETS, TRAINING_ENGINES, Planner, Preset, synthesize
from polyhead.data.synth.text import INTENTS, TextSource
from polyhead.text import normalize_text

SPEECH = [f"speech_{s}" for s in ("train", "dev", "test")]
SPEAKER = [f"speaker_{s}" for s in ("train", "dev", "test")]
VAD = [f"vad_{s}" for s in ("train", "dev", "test")]
CONV = ["conversations_train", "conversations_dev", "conversations_test"]
NATURAL = ["replay_train", "retention_dev", "retention_tel_dev", "retention_test", "retention_tel_test"]
TRANSLATION = ["translate_train", "translate_dev", "translate_test", "codeswitch_test"]
ALL_SETS = SPEECH + SPEAKER + ["ood_test"] + VAD + CONV + NATURAL + TRANSLATION
TRIAL_SETS = ["speaker_dev", "speaker_test", "ood_test"]
TRAIN_SETS = [s for s in ALL_SETS if s.endswith("_train")]
EVAL_SETS = [s for s in ALL_SETS if s.endswith(("_dev", "_test"))]
LONG_SETS = VAD + CONV
# the written form the decoder learns: a capital, words, a full stop or a question mark
WRITTEN = r"[A-Z][A-Za-z']*( [A-Za-z']+)*[.?]"


@pytest.fixture(scope="module")
def tiny(tiny_corpus, voices):
    """The tiny preset, synthesised once with seed 0 (the session fixture in conftest.py)."""
    return tiny_corpus


@pytest.fixture(scope="module")
def tiny_again(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("tiny_b")
    summary = synthesize(out, "tiny", seed=0, workers=2, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def cuts(tiny):
    out, _ = tiny
    return {name: list(load_set(out, name)) for name in ALL_SETS}


@pytest.fixture(scope="module")
def demo_plan(voices):
    jobs, speakers = Planner(PRESETS["demo"], 0, voices).plan()
    return jobs, speakers


def sups(cut_list):
    return [s for c in cut_list for s in c.supervisions]


def manifest_lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --- determinism -------------------------------------------------------------------------

def test_same_seed_gives_identical_manifests_and_audio(tiny, tiny_again):
    (a, sa), (b, sb) = tiny, tiny_again
    names = sorted(p.name for p in (a / MANIFEST_DIR).glob("*.jsonl.gz"))
    assert names == sorted(p.name for p in (b / MANIFEST_DIR).glob("*.jsonl.gz"))
    assert len(names) == 3 * len(ALL_SETS)
    for name in names:
        la, lb = manifest_lines(a / MANIFEST_DIR / name), manifest_lines(b / MANIFEST_DIR / name)
        assert la, name
        assert la == lb, f"{name} differs between two runs with the same seed"
    for sub in ("trials", "rttm", "nemo"):
        files = sorted(p.relative_to(a) for p in (a / sub).rglob("*") if p.is_file())
        assert files
        for rel in files:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    wavs = sorted(p.relative_to(a) for p in (a / "audio").rglob("*.wav"))
    assert wavs == sorted(p.relative_to(b) for p in (b / "audio").rglob("*.wav"))
    for rel in wavs:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    sa, sb = dict(sa), dict(sb)
    sa.pop("seconds"), sb.pop("seconds")
    assert sa == sb


def test_different_seed_gives_different_text(cuts, voices):
    texts0 = [s.text for name in ALL_SETS for s in sups(cuts[name])]
    jobs1, _ = Planner(PRESETS["tiny"], 1, voices).plan()
    texts1 = [u.text for j in jobs1 for _, _, u in j.turns]
    sentences0 = {s.text for name in ALL_SETS for s in sups(cuts[name]) if s.custom["kind"] == "sentence"}
    sentences1 = {u.text for j in jobs1 for _, _, u in j.turns if u.kind == "sentence"}
    assert texts0 != texts1
    assert len(sentences0 & sentences1) < 0.1 * len(sentences0)
    # and the planner reproduces the synthesised texts for seed 0
    jobs0, _ = Planner(PRESETS["tiny"], 0, voices).plan()
    planned0 = Counter(u.text for j in jobs0 for _, _, u in j.turns)
    assert Counter(texts0) == planned0


# --- layout and audio --------------------------------------------------------------------

def documented_sets() -> set[str]:
    """Set names in build.py's docstring: `speech_{train,dev,test}`, `ood_test`, ..."""
    doc = build.__doc__.split("Sets:", 1)[1]
    names = set()
    for stem, alts, plain in re.findall(r"\b([a-z]+(?:_[a-z]+)*)_\{([a-z,]+)\}|\b([a-z]+(?:_[a-z]+)*_(?:train|dev|test))\b", doc):
        names |= {f"{stem}_{a}" for a in alts.split(",")} if stem else {plain}
    return names


def test_every_documented_set_exists(tiny):
    out, summary = tiny
    assert documented_sets() == set(ALL_SETS)
    assert sorted(summary["sets"]) == sorted(ALL_SETS)
    for name in ALL_SETS:
        for kind in ("recordings", "supervisions", "cuts"):
            assert (out / MANIFEST_DIR / f"{name}_{kind}.jsonl.gz").is_file(), (name, kind)
        assert (out / "audio" / name).is_dir()
        assert summary["sets"][name]["recordings"] > 0
    for name in SPEECH + SPEAKER + ["ood_test"]:
        assert (out / "nemo" / f"{name}.jsonl").is_file()
    for name in LONG_SETS:
        assert (out / "rttm" / f"{name}.rttm").is_file()
    for name in TRIAL_SETS:
        assert (out / "trials" / f"{name}.txt").is_file()
    assert summary["skipped_files"] == 0
    assert read_info(out)["preset"] == "tiny"


def test_audio_is_16k_mono_and_durations_match(tiny, cuts):
    out, _ = tiny
    n_files = 0
    for name in ALL_SETS:
        for cut in cuts[name]:
            path = Path(cut.recording.sources[0].source)
            assert path.is_file() and path.suffix == ".wav"
            assert path.is_relative_to((out / "audio" / name).resolve())
            info = sf.info(str(path))
            assert info.samplerate == SAMPLE_RATE and info.channels == 1
            assert info.frames == cut.recording.num_samples
            assert cut.recording.sampling_rate == SAMPLE_RATE
            assert cut.duration == pytest.approx(info.frames / SAMPLE_RATE, abs=1e-3)
            assert cut.recording.duration == pytest.approx(info.frames / SAMPLE_RATE, abs=1e-3)
            x = load_audio(path)
            assert x.dtype == np.float32 and x.ndim == 1 and len(x) == info.frames
            assert np.abs(x).max() > 0.01, f"{path} is silent"
            if name not in LONG_SETS:
                assert len(cut.supervisions) == 1
                sup = cut.supervisions[0]
                assert sup.start == 0.0
                assert sup.duration == pytest.approx(cut.duration, abs=1e-3)
            n_files += 1
    assert n_files == len(list((out / "audio").rglob("*.wav")))


def test_nemo_manifests_match_cuts(tiny, cuts):
    out, _ = tiny
    for name in SPEECH + SPEAKER + ["ood_test"]:
        rows = [json.loads(l) for l in (out / "nemo" / f"{name}.jsonl").read_text().splitlines()]
        by_id = {c.id: c for c in cuts[name]}
        assert len(rows) == len(by_id)
        for row in rows:
            wav = (out / "nemo" / row["audio_filepath"]).resolve()
            assert wav.is_file()
            rec_id = str(wav.relative_to((out / "audio" / name).resolve()).with_suffix(""))
            sup = by_id[rec_id].supervisions[0]
            assert row["duration"] == pytest.approx(by_id[rec_id].duration, abs=1e-3)
            assert (row["text"], row["label"], row["lang"]) == (sup.text, sup.speaker, sup.language)


# --- splits and text leakage -------------------------------------------------------------

def test_train_speakers_disjoint_from_dev_and_test(cuts):
    train = {s.speaker for name in TRAIN_SETS for s in sups(cuts[name])}
    assert train
    for name in EVAL_SETS:
        spk = {s.speaker for s in sups(cuts[name])}
        assert spk and not spk & train, name
    # dev and test speakers are also disjoint from each other
    for fam in ("speech", "speaker"):
        dev = {s.speaker for s in sups(cuts[f"{fam}_dev"])}
        test = {s.speaker for s in sups(cuts[f"{fam}_test"])}
        assert not dev & test


def test_no_eval_sentence_in_train(cuts):
    train_texts = {s.text for name in TRAIN_SETS for s in sups(cuts[name])}
    eval_sentences = [s.text for name in ("speech_dev", "speech_test") for s in sups(cuts[name])
                      if s.custom["kind"] == "sentence"]
    assert eval_sentences
    assert not set(eval_sentences) & train_texts
    # sentences never repeat anywhere in the corpus
    all_sentences = [s.text for name in ALL_SETS for s in sups(cuts[name]) if s.custom["kind"] == "sentence"]
    assert len(all_sentences) == len(set(all_sentences))


def test_demo_plan_holds_out_base_voices(demo_plan, voices):
    """Half of every dev/test set uses base voices that no train speaker (of any set) uses."""
    for seed in (0, 1, 2):
        _, speakers = Planner(PRESETS["demo"], seed, voices).plan() if seed else demo_plan
        train_voices = {s.voice.id for name in ("speech_train", "speaker_train") for s in speakers[name]}
        for name in ("speech_dev", "speech_test", "speaker_dev", "speaker_test"):
            unseen = [s for s in speakers[name] if s.voice.id not in train_voices]
            assert len(unseen) >= max(2, len(speakers[name]) // 2), (seed, name, len(unseen))
        test_voices = {s.voice.id for s in speakers["speaker_test"]}
        assert test_voices - train_voices


def test_demo_preset_sizes(demo_plan):
    """Planned only: the speakers a pretrained-encoder recipe needs (300 speaker_train, 40 in
    every test set), each with utterances, and about the training audio the 15-minute demo
    budget was fitted to (64 x 45 speech_train and 80 x 12 speaker_train utterances before)."""
    p = PRESETS["demo"]
    assert p.speaker_speakers[0] >= 300
    assert min(p.speech_speakers[2], p.speaker_speakers[2], p.ood_speakers) >= 40
    jobs, speakers = demo_plan
    used: dict[str, set[str]] = {}
    for j in jobs:
        used.setdefault(j.set_name, set()).update(spk.id for spk, _, _ in j.turns)
    counts = Counter(j.set_name for j in jobs)
    assert len(speakers["speaker_train"]) >= 300
    for name in ("speech_test", "speaker_test", "ood_test"):
        assert len(speakers[name]) >= 40, name
    for name in SPEECH + SPEAKER + ["ood_test"]:
        assert used[name] == {s.id for s in speakers[name]}, name
    # every ood_test speaker can be a target trial: two sessions
    by_spk: dict[str, set[int]] = {}
    for j in jobs:
        if j.set_name == "ood_test":
            spk, sess, _ = j.turns[0]
            by_spk.setdefault(spk.id, set()).add(sess)
    assert all(len(s) >= 2 for s in by_spk.values())
    assert 2500 <= counts["speech_train"] <= 3500
    assert 3800 <= counts["speech_train"] + counts["speaker_train"] <= 5500
    # model selection: speech_dev holds the 200 utterances a dev evaluation decodes
    assert counts["speech_dev"] >= 200 and len(speakers["speaker_dev"]) >= 16


def test_demo_plan_languages_intents_and_ood(demo_plan):
    jobs, speakers = demo_plan
    utts = [u for j in jobs for _, _, u in j.turns]
    assert len({u.language for u in utts}) >= 7
    assert len({u.intent for u in utts if u.intent}) >= 10
    assert {u.intent for u in utts if u.intent} <= set(INTENTS)
    speaker_langs = {u.language for j in jobs if j.set_name.startswith("speaker_") for _, _, u in j.turns}
    assert len(speaker_langs) >= 5
    for j in jobs:
        if j.set_name.startswith("speech_"):
            assert all(u.language == "en" for _, _, u in j.turns)
    assert speakers["ood_test"]
    assert all(s.voice.engine in OOD_ENGINES for s in speakers["ood_test"])
    ood_jobs = [j for j in jobs if j.set_name == "ood_test"]
    assert ood_jobs and all(spk.voice.engine in OOD_ENGINES for j in ood_jobs for spk, _, _ in j.turns)
    assert all(u.language == "en" for j in ood_jobs for _, _, u in j.turns)
    for j in jobs:
        # retention sets: natural English read by the engines never trained on
        engines = OOD_ENGINES if j.set_name == "ood_test" or j.set_name.startswith("retention_") else TRAINING_ENGINES
        assert all(spk.voice.engine in engines for spk, _, _ in j.turns), j.set_name


# --- trial lists ------------------------------------------------------------------------

@pytest.mark.parametrize("name", TRIAL_SETS)
def test_trial_lists(tiny, cuts, name):
    out, _ = tiny
    by_id = {c.id: c.supervisions[0] for c in cuts[name]}
    trials = read_trials(out / "trials" / f"{name}.txt", known_ids=by_id)
    assert trials
    pairs = [frozenset((t.enrol, t.test)) for t in trials]
    assert len(set(pairs)) == len(pairs), "duplicate trials (in either order)"
    for t in trials:
        e, s = by_id[t.enrol], by_id[t.test]
        assert t.enrol != t.test
        if t.target:
            assert e.speaker == s.speaker
            assert e.custom["session"] != s.custom["session"]
        else:
            assert e.speaker != s.speaker
            assert e.gender == s.gender
    kinds = {t.target for t in trials}
    if name != "ood_test":
        assert kinds == {True, False}
    # same-voice impostors are used wherever two speakers share a base voice and gender
    shared = Counter((s.custom["voice"], s.gender) for s in
                     {sup.speaker: sup for sup in by_id.values()}.values())
    if any(n > 1 for n in shared.values()):
        assert any(not t.target and by_id[t.enrol].custom["voice"] == by_id[t.test].custom["voice"]
                   for t in trials)


def test_corpus_info_has_baselines(tiny):
    out, summary = tiny
    info = json.loads((out / CORPUS_INFO).read_text())
    assert info["sets"] == json.loads(json.dumps(summary["sets"]))
    for name in ("speaker_dev", "speaker_test"):
        eer = info["sets"][name]["mfcc_baseline_eer"]
        assert isinstance(eer, float) and 0.0 <= eer <= 1.0
        n = len((out / "trials" / f"{name}.txt").read_text().splitlines())
        assert info["sets"][name]["trials"] == n
    assert "mfcc_baseline_eer" in info["sets"]["ood_test"]


# --- labels -----------------------------------------------------------------------------

def test_speech_labels(cuts):
    kinds = Counter()
    for name in SPEECH:
        for sup in sups(cuts[name]):
            c = sup.custom
            assert sup.text and re.fullmatch(WRITTEN, sup.text), sup.text
            assert sup.language == "en"
            assert sup.speaker and sup.gender in ("m", "f")
            assert c["session"].startswith(sup.speaker + "-s")
            assert c["engine"] in TRAINING_ENGINES
            assert c["voice"].startswith(c["engine"] + ":")
            assert c["phonemes"] and c["phonemes"].strip()
            kinds[c["kind"]] += 1
            if c["kind"] == "command":
                assert c["intent"] in INTENTS
                for value in (c["slots"] or {}).values():
                    assert value and f" {value} " in f" {normalize_text(sup.text)} ", (value, sup.text)
            else:
                assert c["kind"] == "sentence" and c["intent"] is None
    assert kinds["sentence"] > 0


def test_commands_everywhere_have_slots_in_text(cuts):
    commands = [s for name in ALL_SETS for s in sups(cuts[name]) if s.custom["kind"] == "command"]
    assert commands
    for sup in commands:
        assert sup.custom["intent"] in INTENTS
        for value in (sup.custom["slots"] or {}).values():
            assert value and f" {value} " in f" {normalize_text(sup.text)} "


def test_speaker_sets_are_multilingual(cuts):
    langs = {s.language for name in SPEAKER for s in sups(cuts[name])}
    assert len(langs) >= 2 and "en" in langs
    for name in SPEAKER:
        for sup in sups(cuts[name]):
            assert sup.text and sup.speaker and sup.gender in ("m", "f") and sup.custom["session"]
            if sup.language != "en":
                assert sup.custom["kind"] == "foreign"
            if sup.custom["engine"] in TRAINING_ENGINES:
                assert sup.custom["phonemes"]


# --- long recordings ---------------------------------------------------------------------

def parse_rttm(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        f = line.split()
        assert len(f) == 10 and f[0] == "SPEAKER" and f[2] == "1"
        rows.append((f[1], float(f[3]), float(f[4]), f[7]))
    return rows


@pytest.mark.parametrize("name", LONG_SETS)
def test_long_recordings(tiny, cuts, name):
    out, _ = tiny
    expected = []
    for cut in cuts[name]:
        assert len(cut.supervisions) >= 2
        ids = [s.id for s in cut.supervisions]
        assert len(set(ids)) == len(ids)
        for s in cut.supervisions:
            assert s.recording_id == cut.recording_id
            assert s.start >= 0 and s.duration > 0
            assert s.start + s.duration <= cut.duration + 1e-3
            assert s.language == "en" and s.text
            expected.append((s.recording_id, s.start, s.duration, s.speaker))
        speakers = {s.speaker for s in cut.supervisions}
        if name.startswith("vad"):
            assert len(speakers) == 1
        else:
            assert 2 <= len(speakers) <= 4
        # turns are in time order and the audio is not one long block of speech
        starts = [s.start for s in cut.supervisions]
        assert starts == sorted(starts) or name.startswith("conv")
        assert cut.supervisions[0].start > 0.3
    rttm = parse_rttm(out / "rttm" / f"{name}.rttm")
    assert len(rttm) == len(expected)
    for (rid, st, du, spk), (erid, est, edu, espk) in zip(sorted(rttm), sorted(expected)):
        assert (rid, spk) == (erid, espk)
        assert st == pytest.approx(est, abs=1e-3) and du == pytest.approx(edu, abs=1e-3)


def _zero_runs(x: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of exact zeros in ``x``."""
    z = np.r_[False, x == 0, False].astype(np.int8)
    d = np.diff(z)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def test_negative_stretches_are_what_they_claim():
    rng = np.random.default_rng(3)
    n = 2 * SAMPLE_RATE
    assert not nonspeech.stretch("zeros", n, rng).any()
    for _ in range(5):
        hiss = nonspeech.stretch("noise", n, rng)
        assert -61 < 10 * np.log10(np.mean(hiss.astype(np.float64) ** 2)) < -44
        music = nonspeech.stretch("tones", n, rng)
        assert -31 < 20 * np.log10(np.abs(music).max()) < -5
        spectrum = np.abs(np.fft.rfft(music)) ** 2
        assert np.sort(spectrum)[-len(spectrum) // 100:].sum() > 0.5 * spectrum.sum()  # tonal: energy in few bins


def test_negatives_are_spliced_into_pauses_and_turns_move_with_them():
    rng = np.random.default_rng(1)
    y = (rng.standard_normal(20 * SAMPLE_RATE) * 0.01).astype(np.float32)
    segs = [dict(start=2.0, duration=3.0, turn=0), dict(start=6.5, duration=4.0, turn=1),
            dict(start=12.0, duration=5.0, turn=2)]
    for seg in segs:
        a = int(seg["start"] * SAMPLE_RATE)
        y[a:a + int(seg["duration"] * SAMPLE_RATE)] = 0.5
    z, moved = build._with_negatives(y, segs, np.random.default_rng(5))
    again = build._with_negatives(y, segs, np.random.default_rng(5))
    assert np.array_equal(z, again[0]) and moved == again[1]  # deterministic from the job's generator
    lo, hi = build.NEGATIVE_SECONDS
    extra = (len(z) - len(y)) / SAMPLE_RATE
    assert len(build.NEGATIVE_KINDS) * lo <= extra <= len(build.NEGATIVE_KINDS) * hi
    speech = np.zeros(len(z), bool)
    for seg, old in zip(moved, segs):
        a = round(seg["start"] * SAMPLE_RATE)
        b = a + int(seg["duration"] * SAMPLE_RATE)
        assert seg["duration"] == old["duration"] and seg["start"] >= old["start"]
        assert np.all(z[a:b] == 0.5)  # each turn intact, where its label says
        speech[a:b] = True
    assert (z[~speech] == 0.5).sum() == 0  # no turn sample outside the labels
    assert any(b - a >= lo * SAMPLE_RATE for a, b in _zero_runs(z))  # the muted stretch


def test_vad_recordings_have_labelled_non_speech(tiny, cuts, demo_plan):
    """Every VAD recording holds at least a second of exact digital zeros outside its speech
    labels (only the VAD sets get negative stretches)."""
    for name in VAD:
        for cut in cuts[name]:
            x = cut.load_audio()[0]
            runs = [(a, b) for a, b in _zero_runs(x) if b - a >= build.NEGATIVE_SECONDS[0] * SAMPLE_RATE]
            assert runs, cut.id
            for a, b in runs:
                for s in cut.supervisions:
                    assert b / SAMPLE_RATE <= s.start + 0.01 or a / SAMPLE_RATE >= s.end - 0.01, (cut.id, s.id)
    jobs, _ = demo_plan
    assert {j.set_name.split("_")[0] for j in jobs if j.negatives} == {"vad"}
    assert all(j.negatives for j in jobs if j.set_name.startswith("vad_"))


# --- text source ------------------------------------------------------------------------

def test_text_source_variety():
    src = TextSource(0)
    texts = [src.sentence().text for _ in range(20_000)]
    assert len(set(texts)) >= 19_000
    assert len({w for t in texts for w in t.split()}) >= 5_000
    for t in texts:
        assert re.fullmatch(WRITTEN, t), t
    for _ in range(500):
        u = src.command()
        assert re.fullmatch(WRITTEN, u.text), u.text
        assert u.intent in INTENTS and u.language == "en"
        assert all(f" {v} " in f" {normalize_text(u.text)} " for v in u.slots.values())
    # deterministic from the seed
    again = TextSource(0)
    assert [again.sentence().text for _ in range(100)] == texts[:100]
    assert [TextSource(1).sentence().text for _ in range(100)] != texts[:100]


# --- stats ------------------------------------------------------------------------------

def test_set_stats_matches_independent_counts(tiny, cuts):
    out, summary = tiny
    train = cuts["speech_train"]
    lines = manifest_lines(out / MANIFEST_DIR / "speech_train_supervisions.jsonl.gz")
    speakers = {l["speaker"] for l in lines}
    sessions = {l["custom"]["session"] for l in lines}
    langs = Counter(l["language"] for l in lines)
    intents = {l["custom"]["intent"] for l in lines if l["custom"].get("intent")}
    words = {w for l in lines for w in l["text"].lower().split()}
    seconds = sum(sf.info(str(p)).frames for p in (out / "audio" / "speech_train").rglob("*.wav")) / SAMPLE_RATE
    stats = set_stats(load_set(out, "speech_train"))
    assert stats["recordings"] == len(train) == len(list((out / "audio" / "speech_train").rglob("*.wav")))
    assert stats["utterances"] == len(lines)
    assert stats["speakers"] == len(speakers) == PRESETS["tiny"].speech_speakers[0]
    assert stats["sessions"] == len(sessions)
    assert stats["languages"] == dict(langs)
    assert stats["intents"] == len(intents)
    assert stats["distinct_words"] == len(words)
    assert stats["hours"] == pytest.approx(seconds / 3600, abs=1e-3)
    assert summary["sets"]["speech_train"] == stats


# --- graceful degradation ---------------------------------------------------------------

SMALL = Preset(speech_speakers=(2, 1, 1), speech_utts=2, speech_sessions=1,
               speaker_speakers=(2, 2, 2), speaker_sessions=2, speaker_utts=1,
               ood_speakers=1, ood_utts=1, vad_recordings=(1, 0, 0), conversations=(0, 0))


def test_only_espeak_voices_skips_ood(tmp_path, monkeypatch, caplog, voices):
    espeak_only = tuple(v for v in voices if v.engine == "espeak")
    monkeypatch.setattr(engines, "available_voices", lambda: espeak_only)
    monkeypatch.setattr(build, "available_voices", lambda: espeak_only)
    with caplog.at_level(logging.WARNING, logger="polyhead.data.synth.build"):
        summary = synthesize(tmp_path, SMALL, seed=3, workers=2, progress=False)
    assert any("ood" in r.getMessage().lower() and r.levelno == logging.WARNING for r in caplog.records)
    assert summary["preset"] == "custom"
    assert "ood_test" not in summary["sets"]
    assert not (tmp_path / MANIFEST_DIR / "ood_test_cuts.jsonl.gz").exists()
    assert not (tmp_path / "trials" / "ood_test.txt").exists()
    assert not (tmp_path / "audio" / "ood_test").exists()
    for name in SPEECH + SPEAKER + ["vad_train"]:
        assert summary["sets"][name]["recordings"] > 0, name
        for cut in load_set(tmp_path, name):
            assert all(s.custom["engine"] == "espeak" for s in cut.supervisions)
    assert all(v.startswith("espeak:") for v in summary["voices"])


def test_no_voices_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "available_voices", lambda: ())
    monkeypatch.setattr(build, "available_voices", lambda: ())
    with pytest.raises(RuntimeError, match="install_engines.sh"):
        synthesize(tmp_path, SMALL, seed=0, workers=1, progress=False)
    assert not (tmp_path / CORPUS_INFO).exists()
