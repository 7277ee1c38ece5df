"""Intensity-only baseline: fitting methods on known data, and an end-to-end fit/score on phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthct.baseline import (
    MR_CENTRES,
    N_HU_BINS,
    N_MR_BINS,
    Mapping,
    fit_baseline,
    fit_table,
    joint_histogram,
    run_baseline,
    table_mae,
)
from synthct.cli import main as cli_main
from synthct.dataset import find_cases, load_case
from synthct.intensity import finalise_sct
from synthct.metrics import mae
from synthct.phantom import write_phantom_dataset


def _table(function, noise_hu: float = 0.0, n: int = 200_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    normalised = rng.uniform(-1, 1, n)
    hu = function(normalised) + rng.normal(0, noise_hu, n) if noise_hu else function(normalised)
    return joint_histogram(normalised, hu, np.ones(n, dtype=np.uint8))


def test_joint_histogram_counts_masked_voxels_only() -> None:
    table = joint_histogram(np.array([-1.0, 0.0, 0.999, 0.5]), np.array([-1024.0, 0.0, 3500.0, 7.0]),
                            np.array([1, 1, 1, 0]))
    assert table.shape == (N_MR_BINS, N_HU_BINS) and table.sum() == 3
    assert table[0, 0] == 1 and table[N_MR_BINS // 2, 512] == 1 and table[-1, -1] == 1


def test_median_lut_recovers_a_non_monotone_map() -> None:
    def truth(n: np.ndarray) -> np.ndarray:
        return 800.0 * np.sin(3.0 * n) + 200.0

    table = _table(truth, noise_hu=30.0)
    fit = fit_table(table, "median_lut")
    assert np.max(np.abs(fit[5:-5] - truth(MR_CENTRES[5:-5]))) < 40.0
    assert table_mae(table, fit) < 30.0  # ~ the noise's mean absolute deviation (24 HU)


def test_isotonic_is_monotone_and_linear_fits_a_line() -> None:
    table = _table(lambda n: 800.0 * np.sin(3.0 * n), noise_hu=20.0)
    iso = fit_table(table, "isotonic")
    steps = np.diff(iso)
    assert np.all(steps >= -1e-9) or np.all(steps <= 1e-9)
    assert table_mae(table, fit_table(table, "median_lut")) <= table_mae(table, iso) <= table_mae(
        table, fit_table(table, "linear")) + 1e-6
    line = _table(lambda n: 500.0 * n - 100.0)
    np.testing.assert_allclose(fit_table(line, "linear"), 500.0 * MR_CENTRES - 100.0, atol=4.0)
    decreasing = _table(lambda n: -700.0 * n)
    assert np.all(np.diff(fit_table(decreasing, "isotonic")) <= 1e-9)
    with pytest.raises(ValueError, match="unknown baseline method"):
        fit_table(table, "magic")
    with pytest.raises(ValueError, match="empty"):
        fit_table(np.zeros_like(table), "median_lut")


def test_auto_selects_by_cross_validation() -> None:
    tables = [_table(lambda n: 900.0 * np.cos(4.0 * n), noise_hu=25.0, n=40_000, seed=s) for s in range(4)]
    mapping, cv = fit_baseline(tables, "auto")
    assert set(cv) == {"median_lut", "isotonic", "linear"}
    assert mapping.method == "median_lut" == min(cv, key=cv.__getitem__)
    again = Mapping.from_dict(json.loads(json.dumps(mapping.to_dict())))
    probe = np.linspace(-1, 1, 101)
    np.testing.assert_allclose(again.predict(probe), mapping.predict(probe), atol=1e-3)


@pytest.fixture(scope="module")
def brain_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    write_phantom_dataset(root, "brain", 4, seed=21, size="small", progress=False)
    return root


def test_run_baseline_fits_and_beats_a_constant(brain_data: Path, tmp_path: Path) -> None:
    split = {"seed": 0, "train": ["1BA001", "1BA002", "1BA003"], "val": ["1BA004"]}
    report = run_baseline(brain_data, "brain", split=split, out_dir=tmp_path)
    assert report["method"] in ("median_lut", "isotonic", "linear")
    (case,) = report["cases"]
    assert case["id"] == "1BA004" and np.isfinite(case["mae"]) and np.isfinite(case["psnr"])
    assert 0.0 < case["ssim"] < 1.0
    assert report["aggregates"]["mae"]["mean"] == pytest.approx(case["mae"])
    written = json.loads((tmp_path / "baseline.json").read_text(encoding="utf-8"))
    assert written["cases"] == report["cases"] and written["mapping"]["method"] == report["method"]
    # The best constant HU inside the training masks does clearly worse.
    cases = {c.case_id: c for c in find_cases(brain_data)}
    train_hu = np.concatenate([load_case(cases[i]).ct[load_case(cases[i]).mask > 0] for i in split["train"]])
    val = load_case(cases["1BA004"])
    constant = finalise_sct(np.full(val.mr.shape, np.median(train_hu), np.float32), val.mask)
    assert case["mae"] < 0.9 * mae(val.ct, constant.astype(np.float32), val.mask)
    # The mapping in baseline.json reproduces the scored prediction.
    mapping = Mapping.from_dict(written["mapping"])
    assert mae(val.ct, mapping.predict_case(val.mr, val.mask).astype(np.float32), val.mask) == pytest.approx(
        case["mae"], rel=1e-6)


def test_baseline_cli(brain_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["baseline", "--data", str(brain_data), "--region", "brain", "--seed", "3", "--out",
                     str(tmp_path), "--method", "isotonic", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "method isotonic" in out and "mean" in out
    assert (tmp_path / "baseline.json").exists()
    bad_split = tmp_path / "split.json"
    bad_split.write_text(json.dumps({"train": ["1BA001"], "val": ["1BA999"]}), encoding="utf-8")
    assert cli_main(["baseline", "--data", str(brain_data), "--region", "brain", "--split", str(bad_split),
                     "--no-progress"]) == 1
