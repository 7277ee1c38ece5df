"""Config validation, overrides and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from synthct.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    diff_configs,
    dump_config,
    load_config,
    parse_override,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_papers() -> None:
    config = config_from_dict({})
    assert config.data.patch_size == [64, 64, 64]
    assert config.optim.lr_generator == 1e-5 and config.optim.lr_discriminator == 1e-5
    assert config.data.val_fraction == 0.2
    assert config.train.epochs == 1000
    assert config.loss.weighting == "paper"
    assert config.data.mr_normalisation.rule == "max"
    assert config.validation.overlap == 0.5


def test_typo_names_the_key_and_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"'optim\.lr_generatr'.*did you mean 'optim\.lr_generator'"):
        config_from_dict({"optim": {"lr_generatr": 1e-4}})
    with pytest.raises(ConfigError, match=r"'trian'.*did you mean 'train'"):
        config_from_dict({"trian": {"epochs": 3}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"feature_size": 13}}, r"model\.feature_size: 13 must be a multiple of 12"),
        ({"data": {"patch_size": [32, 64, 64]}}, r"data\.patch_size\[0\]: 32 is out of range"),
        ({"data": {"patch_size": [64, 64]}}, r"data\.patch_size: expected 3 values"),
        ({"data": {"patch_size": [80, 64, 64]}}, r"data\.patch_size\[0\]: 80 must be a multiple of 32"),
        ({"loss": {"weighting": "flor"}}, r"loss\.weighting: 'flor' is not one of .*did you mean 'floor'"),
        ({"optim": {"lr_generator": -1}}, r"optim\.lr_generator: -1\.0 is out of range"),
        ({"optim": {"lr_generator": "fast"}}, r"optim\.lr_generator: expected a number"),
        ({"train": {"epochs": 2.5}}, r"train\.epochs: expected an integer"),
        ({"train": {"amp": "fp8"}}, r"train\.amp"),
        ({"train": {"max_minutes": float("nan")}}, r"train\.max_minutes: expected a finite number"),
        ({"logging": {"tensorboard": "yes please"}}, r"logging\.tensorboard: expected true or false"),
        ({"model": {"feature_size": 12, "num_heads": [5, 6, 12, 24]}}, r"model\.num_heads\[0\] = 5"),
        ({"model": "big"}, r"model: expected a mapping"),
        ({"region": "lung"}, r"region: 'lung' is not one of"),
    ],
)
def test_bad_values_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_overrides_are_parsed_as_yaml() -> None:
    assert parse_override("optim.lr_generator=2e-4") == (["optim", "lr_generator"], "2e-4")  # YAML 1.1: a string …
    config = load_config(None, ["optim.lr_generator=2e-4", "train.epochs=7", "data.patch_size=[64, 64, 128]",
                                "loss.weighting=uniform", "logging.tensorboard=false"])
    assert config.optim.lr_generator == pytest.approx(2e-4)  # … that the float field accepts
    assert config.train.epochs == 7 and config.data.patch_size == [64, 64, 128]
    assert config.loss.weighting == "uniform" and config.logging.tensorboard is False
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match=r"'train\.epoch'.*did you mean 'train\.epochs'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_file_then_overrides_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: 4\nloss:\n  alpha: 0.5\n", encoding="utf-8")
    config = load_config(path, ["train.epochs=9"])
    assert (config.train.epochs, config.train.batch_size, config.loss.alpha) == (9, 4, 0.5)
    again = config_from_dict(yaml.safe_load(dump_config(config)))
    assert again == config
    assert diff_configs(config.to_dict(), again.to_dict()) == []
    assert diff_configs(config.to_dict(), load_config(path).to_dict()) == ["train.epochs"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epocs: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{bad.name}.*'train\.epocs'.*'train\.epochs'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listed)


@pytest.mark.parametrize("name", ["paper.yaml", "cpu_smoke.yaml", "tiny.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(CONFIGS / name)
    if name == "paper.yaml":
        assert config == config_from_dict({})  # the paper's values are the defaults
