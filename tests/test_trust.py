"""Trust outputs (SPEC §14): the uncertainty map and the out-of-distribution check.

The OOD tests use an analytic package with a training record computed by ``synthct trust-record`` from a phantom
training set, not a network trained in the test: the check's decision depends only on the package's record (made
from the training cases' MRs, never from the weights), so a trained network would cost minutes and test nothing
more of it. ``benchmarks/bench_trust.py`` measures the same check with the trained ``make demo`` model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package
from synthct.algorithm.backends import make_predictor
from synthct.algorithm.container import run_container
from synthct.algorithm.inference import TrustRequest, predict_case

from synthct.cli import main as synthct_main
from synthct.dataset import make_split, write_split
from synthct.model_package import ModelPackageError, load_model_package
from synthct.phantom import generate_volumes, write_phantom_dataset
from synthct.phantom.ood import signal_void, t2_like, truncated_fov
from synthct.trust import UNCERTAINTY_MODES

ASYMMETRIC = np.zeros((3, 3, 3), dtype=np.float32)
ASYMMETRIC[1, 1, 1], ASYMMETRIC[1, 1, 2], ASYMMETRIC[1, 2, 2], ASYMMETRIC[2, 1, 1] = 0.6, 0.25, 0.1, 0.05
"""Not symmetric along any axis: the convolution package is not flip-equivariant."""


def brain_case(seed: int, every: int = 2) -> tuple[sitk.Image, sitk.Image]:
    """A small brain phantom (every ``every``-th slice) as (MR, mask) images."""
    volumes = generate_volumes("brain", seed, "small")
    images = []
    for array in (volumes.mr[::every], volumes.mask[::every]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing((1.0, 1.0, float(every)))
        image.SetOrigin((-51.5, -20.0, 33.25))
        images.append(image)
    return images[0], images[1]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"voxelwise": build_analytic_package(root / "voxelwise" / "brain", "brain"),
            "kernel": build_analytic_package(root / "kernel" / "brain", "brain", kernel=ASYMMETRIC,
                                             spacing_zyx_mm=(1.0, 1.0, 1.0))}


def run(package_dir: Path, mr: sitk.Image, mask: sitk.Image, mode: str | None) -> tuple[np.ndarray, TrustRequest]:
    package = load_model_package(package_dir)
    trust = TrustRequest(uncertainty=mode)
    sct, _ = predict_case(mr, mask, package, make_predictor(package, "onnxruntime", "cpu", 1), progress=False,
                          trust=trust)
    return sitk.GetArrayFromImage(sct), trust


@pytest.mark.parametrize("mode", ["mirror3", "shift"])
def test_flip_and_shift_equivariant_model_has_zero_uncertainty(packages: dict[str, Path], mode: str) -> None:
    mr, mask = brain_case(7)
    sct, trust = run(packages["voxelwise"], mr, mask, mode)
    assert trust.uncertainty_image is not None
    spread = sitk.GetArrayFromImage(trust.uncertainty_image)
    assert spread.dtype == np.float32
    assert float(spread.max()) < 1e-3  # a voxel-wise map: every member gives the same value (float rounding only)
    plain, _ = run(packages["voxelwise"], mr, mask, None)
    np.testing.assert_array_equal(sct, plain)  # the uncertainty never changes the sCT


def test_non_equivariant_model_has_uncertainty(packages: dict[str, Path]) -> None:
    mr, mask = brain_case(7)
    _, trust = run(packages["kernel"], mr, mask, "mirror")
    assert trust.uncertainty_image is not None
    spread = sitk.GetArrayFromImage(trust.uncertainty_image)
    body = sitk.GetArrayFromImage(mask) > 0
    assert float(spread[body].mean()) > 1.0  # HU: mirroring moves the asymmetric kernel's output
    _, shifted = run(packages["kernel"], mr, mask, "shift")
    assert shifted.uncertainty_image is not None  # zero padding at window borders: the grid offset matters
    assert float(sitk.GetArrayFromImage(shifted.uncertainty_image)[body].max()) > 1.0


def test_map_has_the_mr_geometry_and_zero_outside_the_body(packages: dict[str, Path], tmp_path: Path) -> None:
    mr, mask = brain_case(8)
    permuted = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # a sagittal-like storage: reoriented, and the 2 mm
    for image in (mr, mask):                                       # axis resampled to the package's 1 mm
        image.SetDirection(permuted)
        image.SetOrigin((12.5, -3.0, 40.0))
    sitk.WriteImage(mr, str(tmp_path / "1BA001.mha"))
    sitk.WriteImage(mask, str(tmp_path / "mask.mha"))
    out = tmp_path / "out"
    code = synthct_main(["predict", "--no-progress", "--mr", str(tmp_path / "1BA001.mha"), "--mask",
                         str(tmp_path / "mask.mha"), "--model", str(packages["kernel"]), "--out", str(out),
                         "--uncertainty", "mirror"])
    assert code == 0
    entry = json.loads((out / "results.json").read_text(encoding="utf-8"))[0]
    assert entry["geometry"]["reoriented"] and entry["geometry"]["resampled"]
    path = out / "uncertainty" / "1BA001.mha"
    spread_image = sitk.ReadImage(str(path))
    assert spread_image.GetPixelID() == sitk.sitkFloat32
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(spread_image, getter)() == pytest.approx(getattr(mr, getter)())
    spread = sitk.GetArrayFromImage(spread_image)
    body = sitk.GetArrayFromImage(mask) > 0
    assert np.all(spread[~body] == 0.0) and float(spread[body].mean()) > 1.0
    summary = entry["uncertainty"]
    assert summary["mode"] == "mirror" and summary["passes"] == 2 and summary["filename"] == str(path)
    assert summary["mean_hu"] == pytest.approx(float(spread[body].mean()), abs=0.01)
    assert summary["p95_hu"] == pytest.approx(float(np.percentile(spread[body], 95)), abs=0.01)
    assert set(summary["above"]) == {"25", "50", "100"} and summary["limit_hu"] is None and not summary["flagged"]
    assert "no uncertainty calibration" in summary["calibration"]
    assert {"type": "metaio_image", "filename": str(path)} in entry["outputs"]
    assert "out_of_distribution" not in entry  # this package has no training record
    page = (out / "qa" / "index.html").read_text(encoding="utf-8")
    assert "uncertainty (mirror): mean" in page and "OOD check: not done" in page
    assert sitk.ReadImage(str(out / "qa" / "1BA001.png")).GetSize()[1] > 850  # three picture rows (two: ~600)


# ------------------------------------------------------------------------------------- out of distribution
@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An analytic brain package whose trust record comes from 9 small brain phantoms (8 train, 1 validation)."""
    root = tmp_path_factory.mktemp("trust")
    data = root / "data"
    write_phantom_dataset(data, "brain", 9, seed=11, progress=False)
    ids = [f"1BA{i:03d}" for i in range(1, 10)]
    split = make_split(ids, 0.1, seed=0)
    write_split(root / "split.json", split)
    package = build_analytic_package(root / "models" / "brain", "brain", kernel=ASYMMETRIC)
    assert synthct_main(["trust-record", "--model", str(package), "--data", str(data), "--split",
                         str(root / "split.json"), "--uncertainty", "mirror", "--threads", "1"]) == 0
    return package


def write_case(folder: Path, name: str, mr: np.ndarray, mask: np.ndarray, spacing_xyz: tuple[float, ...]) -> None:
    for sub, array in (("mr", mr), ("mask", mask)):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(spacing_xyz)
        (folder / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / sub / f"{name}.mha"))


@pytest.fixture(scope="module")
def ood_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out in-distribution brains (new seeds), a T2-like brain and a pelvis (no region given)."""
    folder = tmp_path_factory.mktemp("ood_inputs")
    for seed in (501, 502):
        volumes = generate_volumes("brain", seed, "small")
        write_case(folder, f"held_{seed}", volumes.mr, volumes.mask, volumes.spacing_xyz_mm)
    brain = generate_volumes("brain", 503, "small")
    write_case(folder, "t2_like", *t2_like(brain), brain.spacing_xyz_mm)
    pelvis = generate_volumes("pelvis", 504, "small")
    write_case(folder, "pelvis", pelvis.mr, pelvis.mask, pelvis.spacing_xyz_mm)
    return folder


def test_record_is_in_the_package_and_validated(recorded: Path, tmp_path: Path) -> None:
    package = load_model_package(recorded)
    record = package.trust
    assert record is not None and record["region"] == "brain" and record["cases"] == 8
    assert record["threshold"]["score"] >= 3.0 and len(record["threshold"]["leave_one_out"]) == 8
    assert record["uncertainty"]["mode"] == "mirror" and record["uncertainty"]["case_limit_hu"] > 0
    manifest = json.loads((recorded / "model.json").read_text(encoding="utf-8"))
    manifest["trust"]["threshold"]["score"] = -1
    broken = tmp_path / "brain"
    broken.mkdir()
    (broken / "model.onnx").write_bytes((recorded / "model.onnx").read_bytes())
    (broken / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelPackageError, match="threshold"):
        load_model_package(broken)


def test_t2_like_and_pelvis_are_flagged_held_out_cases_are_not(recorded: Path, ood_inputs: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code = synthct_main(["predict", "--no-progress", "--mr", str(ood_inputs / "mr"), "--mask",
                             str(ood_inputs / "mask"), "--model", str(recorded), "--out", str(out)])
    assert code == 0  # a flag does not stop a case by default
    entries = {e["case_id"]: e for e in json.loads((out / "results.json").read_text(encoding="utf-8"))}
    for held in ("held_501", "held_502"):
        result = entries[held]["out_of_distribution"]
        assert result["checked"] and not result["flagged"], result
        assert result["score"] <= result["threshold"]
    for name in ("t2_like", "pelvis"):
        result = entries[name]["out_of_distribution"]
        assert result["flagged"] and result["score"] > result["threshold"] and result["reasons"], result
        assert any("out of distribution" in w for w in entries[name]["warnings"])
        assert (out / f"{name}.mha").is_file()
    assert any("contrast" in r or "intensity distribution" in r for r in entries["t2_like"]["out_of_distribution"]
               ["reasons"])
    assert any("body size" in r or "contrast" in r for r in entries["pelvis"]["out_of_distribution"]["reasons"])
    flagged_logs = [r.getMessage() for r in caplog.records if "out of distribution" in r.getMessage()]
    assert len(flagged_logs) == 2
    page = (out / "qa" / "index.html").read_text(encoding="utf-8")
    assert page.count(">out of distribution<") == 2 and page.count(">in distribution<") == 2


def test_refuse_ood_fails_flagged_cases_while_others_run(recorded: Path, ood_inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = synthct_main(["predict", "--no-progress", "--mr", str(ood_inputs / "mr"), "--mask",
                         str(ood_inputs / "mask"), "--model", str(recorded), "--out", str(out), "--refuse-ood",
                         "--no-qa"])
    assert code == 1  # some case failed
    entries = {e["case_id"]: e for e in json.loads((out / "results.json").read_text(encoding="utf-8"))}
    for name in ("t2_like", "pelvis"):
        assert len(entries[name]["error_messages"]) == 1 and "out of distribution" in entries[name]["error_messages"][0]
        assert entries[name]["out_of_distribution"]["flagged"] and not (out / f"{name}.mha").exists()
    for held in ("held_501", "held_502"):
        assert entries[held]["error_messages"] == [] and (out / f"{held}.mha").is_file()


def test_container_env_uncertainty_and_refusal(recorded: Path, ood_inputs: Path, tmp_path: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    for name in ("held_501", "t2_like"):
        for sub, target in (("mr", "mri"), ("mask", "body")):
            (inp / "images" / target).mkdir(parents=True, exist_ok=True)
            (inp / "images" / target / f"{name}.mha").write_bytes((ood_inputs / sub / f"{name}.mha").read_bytes())
    env = {"SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(out), "SYNTHCT_MODELS": str(recorded.parent),
           "SYNTHCT_ALGORITHM_MODEL": "", "SYNTHCT_PROGRESS": "0", "SYNTHCT_UNCERTAINTY": "on",
           "SYNTHCT_REFUSE_OOD": "1", "SYNTHCT_THREADS": "1"}
    assert run_container(env) == 1
    entries = {Path(e["inputs"][0]["filename"]).stem: e for e in json.loads((out / "results.json").read_text())}
    assert entries["t2_like"]["error_messages"] and entries["held_501"]["error_messages"] == []
    held = entries["held_501"]["uncertainty"]
    assert held["passes"] == len(UNCERTAINTY_MODES[held["mode"]]) + 1
    assert (out / "images" / "synthetic-ct-uncertainty" / "held_501.mha").is_file()
    assert not (out / "images" / "synthetic-ct-uncertainty" / "t2_like.mha").exists()
    env_off = {**env, "SYNTHCT_UNCERTAINTY": "", "SYNTHCT_REFUSE_OOD": "", "SYNTHCT_OUTPUT": str(tmp_path / "o2")}
    assert run_container(env_off) == 0  # default: no map, flagged cases run with a warning
    assert not (tmp_path / "o2" / "images" / "synthetic-ct-uncertainty").exists()
    assert run_container({**env, "SYNTHCT_UNCERTAINTY": "maybe", "SYNTHCT_OUTPUT": str(tmp_path / "o3")}) == 2


def test_constructed_shifts_are_flagged_by_their_own_features(recorded: Path) -> None:
    """Signal void and truncated field of view are flagged for their own reason (not by chance of another)."""
    from synthct.geometry import canonical_reorientation
    from synthct.intensity import normalise_mr
    from synthct.trust import ood_features, score_case

    record = load_model_package(recorded).trust
    assert record is not None
    brain = generate_volumes("brain", 505, "small")
    spacing = brain.spacing_xyz_mm[::-1]
    for build, reason in ((signal_void, "signal void"), (truncated_fov, "field of view cuts the body")):
        mr, mask = build(brain)
        assert canonical_reorientation(brain.image(brain.mr)).is_identity
        features = ood_features(normalise_mr(mr.astype(np.float32), mask > 0, "max"), mask > 0, spacing)
        result = score_case(features, record, spacing)
        assert result["flagged"] and any(r.startswith(reason) for r in result["reasons"]), result


def test_calibrated_summary_uses_the_package_limit(recorded: Path, ood_inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert synthct_main(["predict", "--no-progress", "--mr", str(ood_inputs / "mr" / "held_501.mha"), "--mask",
                         str(ood_inputs / "mask" / "held_501.mha"), "--model", str(recorded), "--out", str(out),
                         "--uncertainty", "mirror", "--no-qa"]) == 0
    calibration = load_model_package(recorded).trust["uncertainty"]  # type: ignore[index]
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))[0]["uncertainty"]
    assert summary["limit_hu"] == pytest.approx(calibration["case_limit_hu"])
    assert summary["flagged"] == (summary["mean_hu"] > calibration["case_limit_hu"])
    assert summary["voxel_level_hu"] == calibration["voxel_level_hu"] and 0.0 <= summary["above_voxel_level"] <= 1.0
    assert "calibration" not in summary


def test_tta_and_uncertainty_share_their_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """--tta and --uncertainty in one run: each distinct member is predicted once, the spread is the uncertainty
    mode's alone, and the mean is over the TTA members alone."""
    from synthct import trust as trust_module

    rng = np.random.default_rng(0)
    volume = rng.uniform(-1, 1, (20, 24, 28)).astype(np.float32)
    mask = np.ones(volume.shape, dtype=bool)

    def predictor(batch: np.ndarray) -> np.ndarray:  # not flip-equivariant: a neighbour along x counts
        return np.tanh(batch + 0.5 * np.roll(batch, 1, axis=-1))

    engine = {"patch_size": (32, 32, 32), "overlap": 0.5, "batch_size": 2}
    plain = trust_module.sliding_window_predict(volume, predictor, mask=mask, **engine)
    calls: list[trust_module.Member] = []
    original = trust_module.member_predict

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(trust_module, "member_predict", counting)
    tta = trust_module.mirror_members(3)
    spread_members = UNCERTAINTY_MODES["mirror3"]
    mean, spread = trust_module.tta_predict(volume, mask, plain, predictor, tta, spread_members, **engine)
    assert sorted(m.label() for m in calls) == ["flip x", "flip y", "flip z"]  # x and y shared, z for the spread
    members = {m: original(volume, mask, predictor, m, **engine) for m in set(calls)}
    np.testing.assert_allclose(mean, (plain + members[tta[1]] + members[tta[2]]) / 3, atol=1e-6)
    stack = np.stack([plain, *(members[m] for m in spread_members)])
    assert spread is not None
    np.testing.assert_allclose(spread, stack.std(axis=0) * trust_module.HU_PER_UNIT, atol=1e-2)
    assert float(spread.max()) > 1.0
