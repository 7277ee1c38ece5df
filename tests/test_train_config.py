"""Config validation, overrides and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from synthct.train.config import (
    ConfigError,
    apply_overrides,
    bundled_configs,
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
        ({"data": {"patch_size": [16, 64, 64]}}, r"data\.patch_size\[0\]: 16 is out of range"),
        ({"data": {"patch_size": [32, 64, 64]}}, r"data\.patch_size \[32, 64, 64\]: SwinUNETR needs ≥ 64"),
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


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(CONFIGS / name)
    if name == "paper.yaml":
        assert config == config_from_dict({})  # the paper's values are the defaults


def test_bundled_configs_by_name(tmp_path: Path) -> None:
    assert load_config("paper") == load_config("paper.yaml") == load_config(CONFIGS / "paper.yaml")
    assert load_config("tiny") == load_config(CONFIGS / "tiny.yaml")
    own = tmp_path / "paper"  # a file wins over the bundled name
    own.write_text("train:\n  epochs: 3\n", encoding="utf-8")
    assert load_config(own).train.epochs == 3
    bundled = bundled_configs()
    assert {"paper", "cpu_smoke", "tiny"} <= set(bundled)
    assert bundled == sorted(path.stem for path in CONFIGS.glob("*.yaml"))
    with pytest.raises(ConfigError, match=rf"nosuch: config file not found.*\(bundled: {', '.join(bundled)}\)"):
        load_config("nosuch")
    with pytest.raises(ConfigError, match=r"bundled: .*paper"):
        load_config(tmp_path / "missing" / "paper.yaml")  # a path to a missing file is not a bundled name


def test_train_cli_resolves_a_bundled_name(tmp_path: Path) -> None:
    import argparse

    from synthct.train.cli import _resolve_config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", "cpu_smoke", "--region", "Head and Neck", "--out", str(tmp_path)])
    config = _resolve_config(args)
    assert config == load_config(CONFIGS / "cpu_smoke.yaml", assignments={"region": "hn"})
    with pytest.raises(ConfigError, match=r"papr: config file not found.*bundled: .*paper"):
        _resolve_config(parser.parse_args(["--config", "papr", "--region", "brain", "--out", str(tmp_path)]))


def test_issue_19_schema_defaults_are_todays_behaviour() -> None:
    config = config_from_dict({})
    assert config.model.architecture == "swinunetr"
    assert config.model.resenc.features_per_stage == [32, 64, 128, 256, 320]
    assert config.model.resenc.blocks_per_stage == [1, 3, 4, 6, 6] and config.model.resenc.upsample == "trilinear"
    assert config.loss.l1_mask == "none" and config.data.mr_normalisation.rule == "max"
    assert (config.optim.name, config.optim.schedule, config.optim.grad_clip) == ("adamw", "constant", 0.0)
    augment = config.data.augment
    assert augment.mirror is False
    assert (augment.gamma_probability, augment.bias_field_probability, augment.noise_probability,
            augment.lowres_probability) == (0.0, 0.0, 0.0, 0.0)


def test_issue_19_schema_accepts_its_values() -> None:
    config = load_config(None, ["model.architecture=resenc_unet", "model.resenc.features_per_stage=[16, 32, 64, 128]",
                                "model.resenc.blocks_per_stage=[1, 2, 2, 2]", "model.resenc.upsample=transposed",
                                "loss.l1_mask=body", "data.mr_normalisation=zscore", "optim.name=sgd",
                                "optim.schedule=poly", "optim.grad_clip=12", "data.augment.mirror=true",
                                "data.augment.gamma_probability=0.3", "data.augment.lowres_probability=0.25"])
    assert config.model.architecture == "resenc_unet" and config.model.resenc.upsample == "transposed"
    assert config.model.resenc.features_per_stage == [16, 32, 64, 128]
    assert config.data.mr_normalisation.rule == "zscore" and config.loss.l1_mask == "body"
    assert (config.optim.name, config.optim.schedule, config.optim.grad_clip) == ("sgd", "poly", 12.0)
    assert config.data.augment.mirror is True and config.data.augment.gamma_probability == 0.3
    assert config_from_dict(config.to_dict()) == config  # what a checkpoint stores rebuilds the same config
    assert config_from_dict({"optim": {"grad_clip": None}}).optim.grad_clip is None
    percentile = config_from_dict({"data": {"mr_normalisation": {"rule": "percentile", "percentile": 99.0}}})
    assert percentile.data.mr_normalisation.percentile == 99.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"architecture": "unet"}}, r"model\.architecture: 'unet' is not one of 'swinunetr', 'resenc_unet'"),
        ({"model": {"resenc": {"upsample": "nearest"}}}, r"model\.resenc\.upsample: 'nearest' is not one of"),
        ({"model": {"resenc": {"features_per_stage": [32, 0]}}}, r"features_per_stage\[1\]: 0 is out of range"),
        ({"model": {"resenc": {"blocks_per_stage": [1, 2]}}}, r"features_per_stage has 5 stages, blocks_per_stage 2"),
        ({"model": {"resenc": {"depth": 3}}}, r"unknown config key 'model\.resenc\.depth'"),
        ({"loss": {"l1_mask": "brain"}}, r"loss\.l1_mask: 'brain' is not one of 'body', 'none'"),
        ({"data": {"mr_normalisation": {"rule": "mean"}}}, r"rule: 'mean' is not one of 'max', 'percentile', 'zscore'"),
        ({"data": {"mr_normalisation": "minmax"}}, r"data\.mr_normalisation\.rule: 'minmax' is not one of"),
        ({"data": {"mr_normalisation": {"percentile": 0}}}, r"percentile: 0\.0 is out of range \(must be > 0\.0\)"),
        ({"optim": {"name": "adam"}}, r"optim\.name: 'adam' is not one of 'adamw', 'sgd'"),
        ({"optim": {"schedule": "step"}}, r"optim\.schedule: 'step' is not one of 'constant', 'cosine', 'poly'"),
        ({"optim": {"grad_clip": -1}}, r"optim\.grad_clip: -1\.0 is out of range"),
        ({"optim": {"grad_clip": "big"}}, r"optim\.grad_clip: expected a number"),
        ({"data": {"augment": {"mirror": "yes"}}}, r"data\.augment\.mirror: expected true or false"),
        ({"data": {"augment": {"noise_probability": 1.5}}}, r"noise_probability: 1\.5 is out of range"),
        ({"data": {"augment": {"bias_field_probability": -0.1}}}, r"bias_field_probability: -0\.1 is out of range"),
    ],
)
def test_issue_19_schema_rejects_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"train": {"epochs": 0, "amp": "fp8"}, "bogus": 1})
    text = str(caught.value)
    assert "train.epochs: 0 is out of range" in text and "train.amp: 'fp8'" in text and "'bogus'" in text
