"""Bad audio met during training is skipped and counted, never a crash or a silent loss;
bad audio given to the decoder is refused with a message naming the file."""

import numpy as np
import pytest
import soundfile as sf
from lhotse import MonoCut, Recording

from polyhead.audio import AudioError, load_audio, to_model_audio
from polyhead.data.batching import Collator, FeatureCache


def _cut(path, cut_id):
    rec = Recording.from_dict(dict(id=cut_id, sources=[dict(type="file", channels=[0], source=str(path))],
                                   sampling_rate=16000, num_samples=16000, duration=1.0, channel_ids=[0]))
    return MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[])


def test_collator_skips_corrupt_and_nan_audio(tmp_path):
    good, corrupt, nan = tmp_path / "good.wav", tmp_path / "corrupt.wav", tmp_path / "nan.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 10)
    x = np.zeros(16000, np.float32)
    x[100] = np.nan
    sf.write(nan, x, 16000, subtype="FLOAT")
    collate = Collator({}, FeatureCache("fbank", enabled=False))
    batch = collate([_cut(good, "good"), _cut(corrupt, "corrupt"), _cut(nan, "nan")])
    assert batch.cut_ids == ["good"]
    assert set(collate.bad_audio) == {"corrupt", "nan"}
    assert "NaN" in collate.bad_audio["nan"]
    with pytest.raises(AudioError, match="unusable"):
        collate([_cut(corrupt, "corrupt")])


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2), (48000, 2)])
def test_any_rate_and_stereo_become_16k_mono(tmp_path, rate, channels):
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((rate, channels), np.float32) + 0.1, rate)
    y = load_audio(path)
    assert y.ndim == 1 and abs(len(y) - 16000) <= 1


def test_unusable_inputs_name_the_culprit(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="<upload>: not a readable audio file"):
        load_audio(b"this is not audio")
    with pytest.raises(AudioError, match="empty audio"):
        to_model_audio(np.zeros(0), 16000, name="z")


def test_float_wav_with_absurd_samples_is_refused(tmp_path):
    """A float WAV whose samples are finite but astronomically large (a corrupt file the fuzzer
    found) is refused by name, instead of overflowing the features into NaN downstream."""
    import soundfile as sf

    from polyhead.audio import AudioError, load_audio

    path = tmp_path / "huge.wav"
    samples = np.zeros(16000, np.float32)
    samples[100] = 3.0e38
    sf.write(str(path), samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="huge.wav: samples up to 3e\\+38"):
        load_audio(str(path))
    sf.write(str(path), samples.clip(-1.5, 1.5), 16000, subtype="FLOAT")  # mild overs are audio
    assert load_audio(str(path)).shape == (16000,)
