"""The second recipe's generator (residual-encoder U-Net, issue 19): the network, its config keys, a few training
steps through the trainer, export with parity, prediction through the package, the architecture guard, and the
mirroring test-time augmentation of ``synthct predict --tta``.

CI-size: widths [4, 8, 16], the smallest patch the config takes, a 3-case dataset, 3 steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from synthct.algorithm.analytic import build_analytic_package  # noqa: E402
from synthct.algorithm.backends import make_predictor  # noqa: E402
from synthct.algorithm.inference import predict_case  # noqa: E402
from synthct.export.errors import ExportError  # noqa: E402
from synthct.export.package import ExportOptions, export_package  # noqa: E402
from synthct.export.source import build_generator_for_export, read_checkpoint  # noqa: E402
from synthct.train.checkpoint import CheckpointError, load_checkpoint, require_architecture, save_checkpoint  # noqa: E402
from synthct.train.config import ConfigError, config_from_dict  # noqa: E402
from synthct.train.models import ArchitectureError, build_generator  # noqa: E402
from synthct.train.resenc import ResEncUNet  # noqa: E402
from synthct.train.step import lr_factor  # noqa: E402
from synthct.train.trainer import Trainer  # noqa: E402
from train_helpers import tiny_config, write_tiny_dataset  # noqa: E402

from synthct.cli import main as synthct_main  # noqa: E402
from synthct.intensity import denormalise_ct, finalise_sct, normalise_mr  # noqa: E402
from synthct.model_package import load_model_package  # noqa: E402
from synthct.sliding_window import sliding_window_predict  # noqa: E402
from synthct.trust import mirror_members  # noqa: E402

RESENC = {"architecture": "resenc_unet",
          "resenc": {"features_per_stage": [4, 8, 16], "blocks_per_stage": [1, 1, 2], "upsample": "trilinear",
                     "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}}
"""The trained model of this file: thick-slice strides (z kept at the first down-sampling), so train, export (ONNX
Resize with per-axis scales) and every backend see an anisotropic plan."""
FAST_EXPORT = {"progress": False, "measure_repeats": 1, "parity_random": 1, "parity_data": 1, "optimise": False,
               "fp16": False, "backend_accuracy": False, "trust": False}
ASYMMETRIC = np.zeros((3, 3, 3), dtype=np.float32)
ASYMMETRIC[1, 1, 1], ASYMMETRIC[1, 1, 2], ASYMMETRIC[1, 2, 2], ASYMMETRIC[2, 1, 1] = 0.6, 0.25, 0.1, 0.05
"""Not symmetric along any axis: a package convolving with it is not flip-equivariant."""


# ------------------------------------------------------------------------------------------------ the network
@pytest.mark.parametrize("upsample", ["trilinear", "transposed"])
def test_resenc_keeps_any_patch_shape_and_the_output_convention(upsample: str) -> None:
    torch.manual_seed(0)
    network = ResEncUNet((4, 8, 16), (1, 2, 1), upsample)  # type: ignore[arg-type]
    mr = torch.rand(2, 1, 32, 64, 96) * 2 - 1  # anisotropic, beyond 64 voxels
    out = network(mr)
    assert out.shape == mr.shape and float(out.detach().abs().max()) < 1.0  # tanh: normalised CT in (-1, 1)
    out.mean().backward()
    assert all(p.grad is not None for p in network.parameters())
    norms = [m for m in network.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.affine for m in norms)  # what export.accurate_norm swaps for ONNX Runtime


@pytest.mark.parametrize("upsample", ["trilinear", "transposed"])
def test_resenc_strides_are_per_stage_and_axis(upsample: str) -> None:
    """Thick slices: z kept at the first down-sampling, halved later; the output keeps the input's shape."""
    torch.manual_seed(0)
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    network = ResEncUNet((4, 8, 16), (1, 1, 1), upsample, strides)  # type: ignore[arg-type]
    assert network.divisors == (2, 4, 4)
    shapes: list[tuple[int, ...]] = []
    for stage in network.encoder:
        stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[2:])))
    mr = torch.rand(1, 1, 8, 32, 24) * 2 - 1
    assert network(mr).shape == mr.shape
    assert shapes == [(8, 32, 24), (8, 16, 12), (4, 8, 6)]
    with pytest.raises(ValueError, match=r"one \(z, y, x\) entry .* per stage \(3 stages\)"):
        ResEncUNet((4, 8, 16), (1, 1, 1), upsample, strides[:2])  # type: ignore[arg-type]


def test_default_strides_are_the_isotropic_plan_with_the_same_weights() -> None:
    """Checkpoints from before the strides key load and compute the same: no strides = [1,1,1] then [2,2,2]."""
    torch.manual_seed(0)
    implicit = ResEncUNet((4, 8, 16), (1, 2, 1))
    explicit = ResEncUNet((4, 8, 16), (1, 2, 1), strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    assert {k: v.shape for k, v in implicit.state_dict().items()} == {
        k: v.shape for k, v in explicit.state_dict().items()}
    explicit.load_state_dict(implicit.state_dict())
    mr = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(implicit(mr), explicit(mr))


def test_patch_and_strides_are_checked_against_each_other() -> None:
    anisotropic = {"architecture": "resenc_unet", "resenc": {
        "features_per_stage": [4, 8, 16, 32], "blocks_per_stage": [1, 1, 1, 1],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]}}
    config = config_from_dict({"model": anisotropic, "data": {"patch_size": [32, 96, 96]}})
    assert config.model.resenc.strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    with pytest.raises(ConfigError, match=r"model\.resenc\.strides has 3 entries for 4 stages"):
        config_from_dict({"model": {**anisotropic, "resenc": {**anisotropic["resenc"],  # type: ignore[dict-item]
                                                              "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}}})
    six = {"architecture": "resenc_unet", "resenc": {"features_per_stage": [4, 8, 16, 32, 64, 64],
                                                     "blocks_per_stage": [1, 1, 1, 1, 1, 1]}}
    config_from_dict({"model": six, "data": {"patch_size": [64, 64, 64]}})  # 2 voxels left per axis
    with pytest.raises(ConfigError, match=r"patch_size \[32, 64, 64\].*multiple of \[32, 32, 32\].*at least 2"):
        config_from_dict({"model": six, "data": {"patch_size": [32, 64, 64]}})
    with pytest.raises(ConfigError, match=r"SwinUNETR needs ≥ 64 voxels on every axis"):
        config_from_dict({"data": {"patch_size": [32, 96, 96]}})


def test_unknown_architecture_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"model\.architecture.*'swinunetr', 'resenc_unet'"):
        config_from_dict({"model": {"architecture": "unet"}})
    with pytest.raises(ArchitectureError, match="known: swinunetr, resenc_unet"):
        build_generator({"architecture": "unet"})
    config = config_from_dict({"model": RESENC})
    assert isinstance(build_generator(config.to_dict()["model"]), ResEncUNet)


def test_poly_schedule() -> None:
    config = config_from_dict({"optim": {"schedule": "poly"}})
    assert lr_factor(config, 0, 0.0) == 1.0
    assert lr_factor(config, 50, 0.5) == pytest.approx(0.5**0.9)
    assert lr_factor(config, 100, 1.0) == 0.0


# ------------------------------------------------------------------------- train → export → predict, parity
@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), n_cases=3)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A run folder of 3 steps of the second recipe (SGD + Nesterov, poly, clipping, masked L1, every device
    augmentation at probability 1, no discriminator) and its config."""
    values = tiny_config(
        model=RESENC,
        data={"root": str(dataset), "mr_normalisation": {"rule": "percentile", "percentile": 99.5},
              "augment": {"enabled": False, "mirror": True, "gamma_probability": 1.0, "bias_field_probability": 1.0,
                          "noise_probability": 1.0, "lowres_probability": 1.0}},
        loss={"alpha": 0.0, "lambda_gan": 0.0, "weighting": "uniform", "l1_mask": "body"},
        optim={"name": "sgd", "lr_generator": 1e-2, "weight_decay": 3e-5, "schedule": "poly", "grad_clip": 12.0},
        train={"max_steps": 3, "epochs": 5, "device": "cpu", "amp": "off"},
        validation={"every_epochs": 0, "at_end": True, "batch_size": 2},
        logging={"tensorboard": False, "progress": False, "log_every_steps": 1},
    )
    config = config_from_dict(values)
    run = tmp_path_factory.mktemp("run")
    result = Trainer(config, run).run()
    assert result.step == 3
    return run, values


def test_resenc_trains_without_a_discriminator(trained: tuple[Path, dict[str, Any]]) -> None:
    run, _ = trained
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["config"]["model"]["architecture"] == "resenc_unet"
    assert checkpoint["config"]["model"]["resenc"]["features_per_stage"] == [4, 8, 16]
    assert checkpoint["discriminator"] == {} and checkpoint["optimizer_d"] == {}  # lambda_gan 0: never built
    assert "momentum_buffer" in next(iter(checkpoint["optimizer_g"]["state"].values()))  # SGD
    records = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(np.isfinite(r["l1"]) and r["l1"] > 0 and r["gan"] == 0.0 and r["d"] == 0.0 for r in steps)
    assert [r["lr"] for r in steps] == pytest.approx([1e-2 * (1 - k / 3) ** 0.9 for k in range(3)])


def test_resenc_exports_and_predicts_through_the_package_with_parity(trained: tuple[Path, dict[str, Any]],
                                                                      dataset: Path, tmp_path: Path) -> None:
    run, _ = trained
    out = tmp_path / "models" / "brain"
    manifest = export_package(run / "last.pt", out, ExportOptions(**FAST_EXPORT))
    assert manifest["generator"] == {"architecture": "resenc_unet", "features_per_stage": [4, 8, 16],
                                     "blocks_per_stage": [1, 1, 2], "upsample": "trilinear",
                                     "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}
    assert manifest["training"]["config"]["model"]["architecture"] == "resenc_unet"
    assert manifest["parity"]["onnxruntime"]["passed"]
    assert manifest["export"]["instance_norm"].startswith("axis-wise")
    case = dataset / "Task1" / "brain" / "1BA001"
    pred = tmp_path / "pred"
    code = synthct_main(["predict", "--no-progress", "--no-qa", "--mr", str(case / "mr.mha"), "--mask",
                         str(case / "mask.mha"), "--model", str(out), "--out", str(pred), "--backend", "onnxruntime"])
    assert code == 0
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / "mr.mha"))).astype(np.float32)
    # the same sCT from the PyTorch generator through the same window engine
    package = load_model_package(out)
    generator = build_generator_for_export(read_checkpoint(run / "last.pt"))
    mr = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "mr.mha")))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "mask.mha"))) > 0
    normalised = normalise_mr(mr, mask, package.mr_rule, package.mr_percentile)  # type: ignore[arg-type]

    def torch_predictor(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return generator(torch.from_numpy(batch)).numpy()

    expected = finalise_sct(denormalise_ct(sliding_window_predict(
        normalised, torch_predictor, patch_size=package.patch_size, overlap=package.overlap, mask=mask,
        batch_size=2, mode=package.manifest["blend"], sigma_scale=package.manifest["sigma_scale"])), mask)
    difference = np.abs(sct - expected.astype(np.float32))[mask]
    assert difference.max() <= 1.0  # int16 rounding of two float32 results ≤ 0.5 HU apart
    assert np.ptp(sct[mask]) > 1.0  # not a constant: the comparison means something
    # the per-axis up-sampling (ONNX Resize with scales (1, 2, 2)) through OpenVINO as well
    pytest.importorskip("openvino")
    patch = np.random.default_rng(0).uniform(-1.0, 0.5, (2, 1, *package.patch_size)).astype(np.float32)
    reference = make_predictor(package, "onnxruntime", "cpu", 1)(patch)
    openvino = make_predictor(package, "openvino", "cpu", 1)(patch)
    assert float(np.abs(openvino - reference).max()) < 1e-3  # normalised CT: 1e-3 ≈ 2 HU


def test_a_checkpoint_of_one_architecture_is_refused_by_the_other(trained: tuple[Path, dict[str, Any]],
                                                                  tmp_path: Path) -> None:
    run, values = trained
    checkpoint = load_checkpoint(run / "last.pt")
    swin = config_from_dict({**values, "model": {"feature_size": 12, "depths": [1, 1, 1, 1]}}).to_dict()["model"]
    with pytest.raises(CheckpointError, match="'resenc_unet' generator but this run builds a 'swinunetr'"):
        require_architecture(checkpoint, swin, run / "last.pt")
    # resuming the run as the other architecture stops before touching the weights
    with pytest.raises(CheckpointError, match=r"resenc_unet.*swinunetr"):
        Trainer(config_from_dict({**values, "model": swin}), run, resume=True).run()
    # a checkpoint whose config names the other architecture than its weights: export refuses, naming both
    checkpoint["config"]["model"] = swin
    save_checkpoint(tmp_path / "mislabelled.pt", checkpoint)
    with pytest.raises(ExportError, match=r"weights are a 'resenc_unet' generator, but model\.architecture is "
                                          r"'swinunetr'"):
        build_generator_for_export(read_checkpoint(tmp_path / "mislabelled.pt"))


# --------------------------------------------------------------------------------- test-time augmentation
def _head(shape: tuple[int, int, int] = (40, 72, 56), seed: int = 3) -> tuple[sitk.Image, sitk.Image]:
    """A textured ellipsoid MR and its mask, 1 mm voxels, LPS (no reorientation, no resampling)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    radius = sum(((g - (n - 1) / 2 - 3) / (0.45 * n)) ** 2 for g, n in zip(grid, shape, strict=True))
    mask = (radius < 1.0).astype(np.uint8)
    texture = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    mr = np.clip(np.where(mask > 0, 600.0 + 2500.0 * texture, 0.0), 0.0, None).astype(np.float32)
    images = [sitk.GetImageFromArray(a) for a in (mr, mask)]
    for image in images:
        image.SetSpacing((1.0, 1.0, 1.0))
    return images[0], images[1]


@pytest.fixture(scope="module")
def kernel_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_analytic_package(tmp_path_factory.mktemp("tta") / "brain", "brain", kernel=ASYMMETRIC,
                                  spacing_zyx_mm=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("count", [2, 8])
def test_tta_is_the_mean_of_the_mirrored_predictions(kernel_package: Path, count: int) -> None:
    package = load_model_package(kernel_package)
    predictor = make_predictor(package, "onnxruntime", "cpu", 1)
    mr, mask = _head()
    sct, _ = predict_case(mr, mask, package, predictor, batch_size=2, progress=False, tta=count, overlap=0.25)
    plain, _ = predict_case(mr, mask, package, predictor, batch_size=2, progress=False, overlap=0.25)
    body = sitk.GetArrayFromImage(mask) > 0
    normalised = normalise_mr(sitk.GetArrayFromImage(mr), body, package.mr_rule, package.mr_percentile)
    engine = {"patch_size": package.patch_size, "overlap": 0.25, "batch_size": 2, "pad_value": -1.0,
              "fill_value": -1.0, "mode": package.manifest["blend"], "sigma_scale": package.manifest["sigma_scale"]}
    predictions = []
    for member in mirror_members(count):  # flip, predict, flip back: written out here, not through synthct.trust
        axes = tuple(a for a, flipped in enumerate(member.flip) if flipped)
        output = sliding_window_predict(np.flip(normalised, axes).copy(), predictor,
                                        mask=np.flip(body, axes).copy(), **engine)
        predictions.append(np.flip(output, axes))
    expected = finalise_sct(denormalise_ct(np.mean(predictions, axis=0, dtype=np.float64).astype(np.float32)), body)
    got = sitk.GetArrayFromImage(sct).astype(np.int32)
    assert np.abs(got - expected.astype(np.int32)).max() <= 1  # int16 rounding of float32 sums
    assert np.abs(got - sitk.GetArrayFromImage(plain).astype(np.int32))[body].mean() > 1.0  # the flips matter


def test_predict_records_tta_and_overlap(kernel_package: Path, tmp_path: Path) -> None:
    mr, mask = _head()
    sitk.WriteImage(mr, str(tmp_path / "1BA001.mha"))
    sitk.WriteImage(mask, str(tmp_path / "mask.mha"))
    common = ["predict", "--no-progress", "--no-qa", "--mr", str(tmp_path / "1BA001.mha"), "--mask",
              str(tmp_path / "mask.mha"), "--model", str(kernel_package)]
    assert synthct_main([*common, "--out", str(tmp_path / "out"), "--tta", "2", "--overlap", "0.25"]) == 0
    entry = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))[0]
    record = entry["inference"]
    assert record["tta"] == 2 and record["tta_members"] == ["plain", "flip x"]
    assert record["overlap"] == 0.25 and record["overlap_from"] == "option" and isinstance(record["seconds"], float)
    assert synthct_main([*common, "--out", str(tmp_path / "default")]) == 0
    default = json.loads((tmp_path / "default" / "results.json").read_text(encoding="utf-8"))[0]
    assert "inference" not in default  # the package's overlap, no TTA: the entry as before
    assert synthct_main([*common, "--out", str(tmp_path / "bad"), "--tta", "9"]) == 2
    assert synthct_main([*common, "--out", str(tmp_path / "bad"), "--overlap", "1.0"]) == 2
