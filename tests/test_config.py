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
