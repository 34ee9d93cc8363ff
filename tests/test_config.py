"""Config loading: bundled configs, YAML inheritance, dotted overrides, deletion, validation."""

import pytest
from pydantic import ValidationError

from polyhead.config import CONFIG_DIR, load_config
from polyhead.sweep import expand


def test_bundled_configs_all_validate():
    names = [str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml")
             if not p.name.endswith(".sweep.yaml")]
    assert "demo" in names and "paper/base" in names and "bench/base" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.tasks, name


def test_dotted_overrides_types_and_nesting():
    cfg = load_config("scratch", ["train.lr=3e-4", "tasks.speaker.crop=9", "train.step=joint",
                               "tasks.asr.head.dims=[0, 48]", "encoder.layers=4"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.tasks["speaker"].crop == 9.0
    assert cfg.train.step == "joint"
    assert cfg.tasks["asr"].head.dims == (0, 48)
    assert cfg.encoder.layers == 4


def test_delete_override_removes_a_task():
    cfg = load_config("scratch", ["~tasks.speaker", "~tasks.lid"])
    assert set(cfg.tasks) == {"asr", "vad"}
    with pytest.raises(ValueError, match="no such key"):
        load_config("scratch", ["~tasks.nothing"])


def test_unknown_keys_and_bad_values_are_errors():
    with pytest.raises(ValidationError):
        load_config("scratch", ["train.lrr=1"])
    with pytest.raises(ValidationError):
        load_config("scratch", ["train.step=sometimes"])
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config("scratch", ["train.lr"])
    with pytest.raises(FileNotFoundError, match="no bundled config"):
        load_config("nope")


def test_inheritance_overrides_key_by_key():
    cfg = load_config("paper/paper2_disjoint_10s")
    assert cfg.tasks["speaker"].crop == 10.0
    assert cfg.tasks["speaker"].target == "speaker"  # inherited from paper/base
    assert cfg.train.heads_only_steps == 3000
    assert cfg.encoder.name == "wav2vec2"


def test_sweep_expansion_is_variants_times_grid():
    spec = {"base": "bench/base", "grid": {"train.lr": [1e-3, 2e-3]},
            "variants": {"a": ["train.step=joint"], "b": []}}
    runs = expand(spec)
    assert len(runs) == 4
    assert runs["a__lr=0.001"] == ["train.step=joint", "train.lr=0.001"]
    for spec_file in CONFIG_DIR.rglob("*.sweep.yaml"):
        import yaml

        for name, overrides in expand(yaml.safe_load(spec_file.read_text())).items():
            load_config(yaml.safe_load(spec_file.read_text())["base"], overrides)


# --- encoder options: checked by each encoder's own options model ---------------------------------

def test_bundled_configs_encoder_options_validate():
    from polyhead.model.encoders import encoder_options

    for path in CONFIG_DIR.rglob("*.yaml"):
        if not path.name.endswith(".sweep.yaml"):
            name = str(path.relative_to(CONFIG_DIR).with_suffix(""))
            encoder_options(load_config(name).encoder)


def test_encoder_overrides_reach_the_encoders_options():
    from polyhead.model.encoders import encoder_options

    config = load_config("demo", ["encoder.pretrained=whisper-base", "encoder.freeze_layers=2"])
    options = encoder_options(config.encoder)
    assert (options.pretrained, options.freeze_layers, options.freeze_front_end) == ("whisper-base", 2, True)
    assert encoder_options(load_config("scratch", ["encoder.layers=4"]).encoder).layers == 4


def test_unknown_or_bad_encoder_option_names_the_encoder_and_the_option():
    from polyhead.config import ConfigError
    from polyhead.model.encoders import encoder_options

    with pytest.raises(ConfigError, match="encoder whisper: unknown option 'layers'.*whisper takes: .*freeze_layers"):
        encoder_options(load_config("demo", ["encoder.layers=2"]).encoder)
    with pytest.raises(ConfigError, match="encoder transformer: unknown option 'conv_kernel'"):
        encoder_options(load_config("scratch", ["encoder.name=transformer"]).encoder)
    with pytest.raises(ConfigError, match="encoder conformer: option 'dim': .*integer"):
        encoder_options(load_config("scratch", ["encoder.dim=wide"]).encoder)


def test_a_config_naming_another_encoder_than_its_base_drops_the_bases_options():
    cfg = load_config("paper/whisper_base")  # base: paper/base, a wav2vec2
    assert cfg.encoder.name == "whisper" and "freeze_feature_extractor" not in cfg.encoder.model_extra


def test_a_checkpoint_config_in_the_old_flat_layout_still_reads():
    """Checkpoints saved before options were per encoder hold every encoder's fields."""
    from polyhead.config import EncoderConfig
    from polyhead.model.encoders import encoder_options

    flat = dict(name="whisper", dim=192, layers=6, heads=4, ff_mult=4, conv_kernel=15, dropout=0.1,
                pretrained="whisper-tiny.en", w2v_config={}, freeze_feature_extractor=True, normalize_waveform=None,
                whisper_config={"d_model": 384}, freeze_front_end=True, pad_to_window=False, freeze_layers=0,
                init_from=None)
    options = encoder_options(EncoderConfig(**flat))
    assert options.model_dump() == dict(pretrained="whisper-tiny.en", whisper_config={"d_model": 384},
                                        freeze_front_end=True, freeze_layers=0, pad_to_window=False)
    conformer = encoder_options(EncoderConfig(**{**flat, "name": "conformer", "dim": 96}))
    assert (conformer.dim, conformer.conv_kernel) == (96, 15)
