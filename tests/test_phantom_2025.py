"""SynthRAD 2025 regions (head and neck, thorax, abdomen): phantoms (HU per tissue, dark lung/gas/bone in MR,
masks, determinism), the 2025 dataset layout and region names, the virtual dose targets, and one region end to end
(phantom → data prepare → train → export → algorithm job with region.json → evaluate, 2025 variant)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from synthct.algorithm.cases import canonical_region as algorithm_region
from synthct.algorithm.cases import region_from_case_id, resolve_region
from synthct.evaluation.dose import INSTALL_HINT, missing_modules
from synthct.evaluation.dose.config import DoseConfig
from synthct.evaluation.dose.structures import check_structures, region_of_case, virtual_structures
from train_helpers import HANG_GUARD_S, REPO, subprocess_env, tiny_config, write_config

from synthct.cli import main as synthct_main
from synthct.dataset import canonical_region, find_cases
from synthct.phantom import SIZES, PhantomVolumes, generate_case, generate_volumes, write_phantom_dataset
from synthct.phantom import tissues as T

REGIONS_2025 = ("hn", "th", "ab")
REGION_JSON = {"hn": "Head and Neck", "th": "Thorax", "ab": "Abdomen"}
FOLDERS = {"hn": "HN", "th": "TH", "ab": "AB"}
IDS = {"hn": "1HNA001", "th": "1THA001", "ab": "1ABA001"}


@pytest.fixture(scope="module")
def phantoms() -> dict[str, PhantomVolumes]:
    return {region: generate_volumes(region, 21, "small") for region in REGIONS_2025}


_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _core(labels: np.ndarray, label: int) -> np.ndarray:
    """Voxels of ``label`` one voxel (in-plane) away from its boundary: free of partial volume along x and y (the
    slices are 2-2.5 mm thick, their blur along z is small)."""
    return ndimage.binary_erosion(labels == label, structure=_IN_PLANE)


# ---------------------------------------------------------------- phantoms


def test_sizes_spacings_and_geometry() -> None:
    assert SIZES["hn"]["synthrad"].shape == (184, 272, 384) and SIZES["hn"]["synthrad"].spacing_mm == (2.0, 1.0, 1.0)
    for region, slices in (("th", 128), ("ab", 112)):
        spec = SIZES[region]["synthrad"]
        assert spec.shape == (slices, 288, 384) and spec.spacing_mm == (2.5, 1.25, 1.25)
    for region in REGIONS_2025:
        mr, ct, mask = generate_case(region, 4, "small")
        spec = SIZES[region]["small"]
        assert mr.GetPixelID() == ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
        for image in (mr, ct, mask):
            assert image.GetSize() == spec.shape[::-1] and image.GetSpacing() == spec.spacing_mm[::-1]
            assert image.GetOrigin() == mr.GetOrigin()
        assert np.prod(spec.shape) < 1.5e6, "small stays small: tests generate several"


# Realistic HU per tissue (unenhanced CT): the tissue's median over its in-plane core must lie in this range.
EXPECTED_HU = {
    T.LUNG: (-900, -780), T.INTERNAL_AIR: (-1024, -930), T.FAT: (-130, -70), T.MUSCLE: (35, 65),
    T.LIVER: (50, 70), T.BLOOD: (30, 55), T.CORTICAL_BONE: (1000, 1800), T.CANCELLOUS_BONE: (200, 400),
    T.SPLEEN: (40, 60), T.KIDNEY: (20, 45), T.HEART: (35, 60),
}
REQUIRED = {
    "hn": {"fat", "muscle", "cortical_bone", "cancellous_bone", "internal_air", "white_matter", "grey_matter",
           "lung", "cartilage", "blood"},
    "th": {"fat", "muscle", "cortical_bone", "cancellous_bone", "lung", "heart", "blood", "liver",
           "table_foam"},
    "ab": {"fat", "muscle", "cortical_bone", "cancellous_bone", "internal_air", "liver", "kidney", "bowel",
           "blood", "table_foam"},
}


@pytest.mark.parametrize("region", REGIONS_2025)
def test_hu_of_every_tissue_is_realistic(region: str, phantoms: dict[str, PhantomVolumes]) -> None:
    volumes = phantoms[region]
    checked = set()
    for label, tissue in T.TISSUES[region].items():
        if label == T.BACKGROUND:
            continue
        core = _core(volumes.labels, label)
        if core.sum() < 30:
            continue
        hu = volumes.ct_hu[core].astype(np.float32)
        median = float(np.median(hu))
        low, high = tissue.hu_range
        assert low <= median <= high, (T.TISSUE_NAMES[label], median)
        assert np.mean((hu >= low - 30) & (hu <= high + 30)) > 0.9, T.TISSUE_NAMES[label]
        if label in EXPECTED_HU:
            expected = EXPECTED_HU[label]
            assert expected[0] <= median <= expected[1], (T.TISSUE_NAMES[label], median, expected)
        checked.add(T.TISSUE_NAMES[label])
    assert REQUIRED[region] <= checked, REQUIRED[region] - checked


@pytest.mark.parametrize("region", REGIONS_2025)
def test_lung_gas_and_bone_are_dark_and_alike_in_mr(region: str, phantoms: dict[str, PhantomVolumes]) -> None:
    """Cortical bone's MR lies inside the air/lung MR range (they overlap as on real T1/T2), all far below soft
    tissue, while the CT tells them apart by more than 1000 HU."""
    volumes = phantoms[region]
    bone = volumes.mr[_core(volumes.labels, T.CORTICAL_BONE)].astype(np.float32)
    dark_labels = [label for label in (T.INTERNAL_AIR, T.LUNG) if _core(volumes.labels, label).sum() >= 30]
    dark = np.concatenate([volumes.mr[_core(volumes.labels, label)] for label in dark_labels]).astype(np.float32)
    assert bone.size > 50 and dark.size > 50
    low, high = np.percentile(dark, [1, 99])
    share = float(np.mean((bone >= low) & (bone <= high)))
    assert share > 0.6, share
    muscle = float(np.median(volumes.mr[_core(volumes.labels, T.MUSCLE)]))
    for label in (T.CORTICAL_BONE, *dark_labels):
        assert np.median(volumes.mr[_core(volumes.labels, label)]) < 0.15 * muscle, T.TISSUE_NAMES[label]
    assert np.median(volumes.ct_hu[volumes.labels == T.CORTICAL_BONE]) - np.median(dark) > 0  # sanity of inputs
    for label in dark_labels:
        gap = np.median(volumes.ct_hu[_core(volumes.labels, T.CORTICAL_BONE)]) - np.median(
            volumes.ct_hu[_core(volumes.labels, label)])
        assert gap > 1000, (T.TISSUE_NAMES[label], gap)


@pytest.mark.parametrize("region", REGIONS_2025)
def test_masks_hold_the_body_with_its_lungs_and_gas_but_not_the_couch(region: str,
                                                                      phantoms: dict[str, PhantomVolumes]) -> None:
    volumes = phantoms[region]
    mask = volumes.mask.astype(bool)
    body = np.isin(volumes.labels, [label for label in T.TISSUE_NAMES
                                    if label not in (T.BACKGROUND, T.TABLE_SHELL, T.TABLE_FOAM)])
    assert np.all(mask[body]), "the mask covers the whole body"
    for label in (T.LUNG, T.INTERNAL_AIR):
        assert np.all(mask[volumes.labels == label]), f"{T.TISSUE_NAMES[label]} lies inside the mask"
    couch = np.isin(volumes.labels, (T.TABLE_SHELL, T.TABLE_FOAM))
    if region == "hn":
        assert not couch.any()
    else:
        assert couch.sum() > 1000 and not mask[couch].any(), "the couch is in the CT, not in the mask"
        air = (volumes.labels == T.BACKGROUND) & ~mask
        assert np.median(volumes.mr[couch]) < 1.3 * np.median(volumes.mr[air]), "no couch in the MR: noise only"
    distance = ndimage.distance_transform_edt(~body, sampling=volumes.spacing_xyz_mm[::-1])
    assert 2.0 <= distance[mask].max() <= 5.0, "the mask is the body dilated by a few mm"
    assert abs(float(np.mean(volumes.ct_hu[~mask & ~couch])) + 1000.0) < 15.0


def test_same_seed_same_case_other_seed_other_case() -> None:
    for region in REGIONS_2025:
        first, again = generate_volumes(region, 7, "small"), generate_volumes(region, 7, "small")
        for name in ("labels", "ct_hu", "mr", "mask"):
            np.testing.assert_array_equal(getattr(first, name), getattr(again, name), err_msg=f"{region} {name}")
        other = generate_volumes(region, 8, "small")
        assert np.mean(other.labels != first.labels) > 0.01, region
        assert not np.array_equal(other.mr, first.mr)


# ---------------------------------------------------------------- layout and region names


def test_2025_layout_ids_and_region_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for region in REGIONS_2025:
        code = synthct_main(["phantom", "--out", str(tmp_path), "--region", region, "--cases", "1", "--seed", "3",
                             "--no-progress"])
        assert code == 0
        folder = tmp_path / "Task1" / FOLDERS[region] / IDS[region]
        assert sorted(p.name for p in folder.iterdir()) == ["ct.mha", "mask.mha", "mr.mha"]
        assert f"wrote 1 {region} case" in capsys.readouterr().out
    cases = find_cases(tmp_path)
    assert {(c.case_id, c.region) for c in cases} == {(IDS[r], r) for r in REGIONS_2025}
    for region in REGIONS_2025:
        assert [c.case_id for c in find_cases(tmp_path, region=REGION_JSON[region])] == [IDS[region]]
        assert canonical_region(REGION_JSON[region]) == algorithm_region(REGION_JSON[region]) == region
        assert canonical_region(FOLDERS[region]) == region
        assert region_from_case_id(IDS[region]) == region_of_case(IDS[region]) == region
        assert resolve_region(IDS[region], None, list(REGIONS_2025)) == region
        assert resolve_region(IDS[region], algorithm_region(REGION_JSON[region]), ["brain", region]) == region
        assert region_of_case("case7", [tmp_path / "Task1" / FOLDERS[region] / "case7" / "ct.mha"]) == region


# ---------------------------------------------------------------- dose: virtual targets


@pytest.mark.parametrize("region", REGIONS_2025)
def test_virtual_dose_target_per_region(region: str, phantoms: dict[str, PhantomVolumes]) -> None:
    volumes = phantoms[region]
    spacing = volumes.spacing_xyz_mm[::-1]
    structures = virtual_structures(volumes.ct_hu.astype(np.float32), volumes.mask, spacing, region, DoseConfig())
    check_structures(structures, volumes.mask, region)
    assert structures.source == f"virtual-{region}" and structures.oars
    inside = np.bincount(volumes.labels[structures.ptv], minlength=T.N_LABELS)
    share = {name: inside[label] / inside.sum() for label, name in T.TISSUE_NAMES.items()}
    if region == "hn":  # oropharynx: neck soft tissue beside the airway, below the skull
        assert share["muscle"] + share["fat"] + share["soft_tissue"] + share["blood"] > 0.9, share
        z_ptv = np.argwhere(structures.ptv)[:, 0].mean()
        z_brain = np.argwhere(volumes.labels == T.WHITE_MATTER)[:, 0]
        assert z_ptv < np.percentile(z_brain, 5)
    elif region == "th":
        assert share["lung"] + share["blood"] > 0.9, share
    else:
        assert share["cortical_bone"] + share["cancellous_bone"] + share["internal_air"] < 0.02, share
        assert share["liver"] + share["fat"] + share["soft_tissue"] + share["blood"] + share["bowel"] > 0.8, share
    assert virtual_structures(volumes.ct_hu.astype(np.float32), volumes.mask, spacing, region,
                              DoseConfig()).ptv.tolist() == structures.ptv.tolist(), "deterministic"


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_modules()), reason=INSTALL_HINT)
def test_evaluate_dose_on_2025_regions(tmp_path: Path, phantoms: dict[str, PhantomVolumes]) -> None:
    """``synthct evaluate --dose photon`` with virtual targets (region from the 2025 ids), sCT = CT."""
    for region in REGIONS_2025:
        volumes = phantoms[region]
        folder = tmp_path / "gt" / IDS[region]
        folder.mkdir(parents=True)
        sitk.WriteImage(volumes.image(volumes.ct_hu), str(folder / "ct.mha"))
        sitk.WriteImage(volumes.image(volumes.mask), str(folder / "mask.mha"))
        (tmp_path / "pred").mkdir(exist_ok=True)
        sitk.WriteImage(volumes.image(volumes.ct_hu), str(tmp_path / "pred" / f"{IDS[region]}.mha"))
    out = tmp_path / "metrics.json"
    command = [sys.executable, "-m", "synthct", "evaluate", "--pred", str(tmp_path / "pred"), "--gt",
               str(tmp_path / "gt"), "--out", str(out), "--no-progress", "--variant", "synthrad2025",
               "--dose", "photon",
               "--dose-set", "dose_grid_mm=5", "--dose-set", "ct_grid_mm=4", "--dose-set", "photon_beams=3",
               "--dose-set", "max_iterations=30", "--dose-set", "target_radius_mm=8", "--dose-set", "oar_radius_mm=6"]
    done = subprocess.run(command, capture_output=True, cwd=REPO, env=subprocess_env(), timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr.decode("utf-8", errors="replace")[-3000:]
    payload = json.loads(out.read_text(encoding="utf-8"))
    by_id = {result["case_id"]: result for result in payload["results"]}
    assert set(by_id) == set(IDS.values())
    for region in REGIONS_2025:
        result = by_id[IDS[region]]
        assert result["dose_error"] is None, result["dose_error"]
        assert result["dose"]["structures"]["source"] == f"virtual-{region}"
        assert result["photon_dose_mae_pct"] < 1e-3 and result["photon_gamma_pass_pct"] == 100.0
        assert result["mae"] == 0.0 and result["ms_ssim"] == pytest.approx(1.0)


# ---------------------------------------------------------------- end to end


def _run(args: list[str], timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthct", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.timeout(4 * HANG_GUARD_S)
@pytest.mark.parametrize("region", ["hn", "th", "ab"])
def test_2025_region_end_to_end_with_region_json(region: str, tmp_path: Path) -> None:
    """Each 2025 region: 2 phantom cases → data prepare → 2 training steps → export → the grand-challenge job with
    region.json "Head and Neck" / "Thorax" / "Abdomen" → evaluate with the 2025 variant."""
    from synthct.algorithm.container import run_container

    data = tmp_path / "data"
    assert synthct_main(["phantom", "--out", str(data), "--region", region, "--cases", "2", "--seed", "5",
                         "--no-progress"]) == 0
    cache = tmp_path / "cache"
    prepared = _run(["data", "prepare", str(data), "--region", REGION_JSON[region], "--out", str(cache),
                     "--no-progress"])
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    config = write_config(tmp_path / "c.yaml", tiny_config(
        train={"max_steps": 2, "epochs": 2}, validation={"every_epochs": 0, "at_end": False},
        data={"cache_dir": str(cache), "num_workers": 0}))
    run = tmp_path / "run"
    trained = _run(["train", "--config", str(config), "--data", str(data), "--region", region, "--out", str(run)])
    assert trained.returncode == 0, trained.stderr[-3000:]
    package = tmp_path / "models" / region
    exported = _run(["export", "--checkpoint", str(run / "last.pt"), "--out", str(package), "--no-optimise",
                     "--no-fp16", "--no-backend-accuracy", "--parity-patches", "1", "--threads", "1",
                     "--no-progress"])
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads((package / "model.json").read_text(encoding="utf-8"))["region"] == region

    case_id = f"1{FOLDERS[region]}A002"
    case = data / "Task1" / FOLDERS[region] / case_id
    job_in, job_out = tmp_path / "input", tmp_path / "output"
    for source, target in (("mr", "mri"), ("mask", "body")):
        (job_in / "images" / target).mkdir(parents=True)
        (job_in / "images" / target / "0f3a-uuid.mha").write_bytes((case / f"{source}.mha").read_bytes())
    (job_in / "region.json").write_text(json.dumps(REGION_JSON[region]), encoding="utf-8")
    env = {**os.environ, "SYNTHCT_INPUT": str(job_in), "SYNTHCT_OUTPUT": str(job_out),
           "SYNTHCT_MODELS": str(tmp_path / "models"), "SYNTHCT_PROGRESS": "0", "SYNTHCT_BACKEND": "onnxruntime",
           "SYNTHCT_THREADS": "1"}
    assert run_container(env) == 0
    results = json.loads((job_out / "results.json").read_text(encoding="utf-8"))
    assert len(results) == 1 and results[0]["error_messages"] == []
    sct_path = job_out / "images" / "synthetic-ct" / "0f3a-uuid.mha"
    sct = sitk.ReadImage(str(sct_path))
    mr = sitk.ReadImage(str(case / "mr.mha"))
    assert sct.GetSize() == mr.GetSize() and sct.GetSpacing() == mr.GetSpacing()
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "mask.mha")))
    assert np.all(sitk.GetArrayFromImage(sct)[mask == 0] == -1000)

    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / f"{case_id}.mha").write_bytes(sct_path.read_bytes())
    metrics = tmp_path / "metrics.json"
    assert synthct_main(["evaluate", "--pred", str(pred), "--gt", str(data), "--out", str(metrics),
                         "--only-predicted", "--variant", "synthrad2025", "--no-progress"]) == 0
    payload = json.loads(metrics.read_text(encoding="utf-8"))
    (result,) = payload["results"]
    assert result["mae"] > 0 and np.isfinite(result["psnr"])
    assert 0.0 < result["ms_ssim"] < 1.0
    assert "ms_ssim" in payload["aggregates"] and "ssim" not in payload["aggregates"]


@pytest.mark.parametrize("region", ["hn", "ab"])
def test_head_neck_and_abdomen_through_prepare_algorithm_and_evaluate(region: str, tmp_path: Path) -> None:
    """The other 2025 regions without training (one trained region above is enough for the trainer): phantom →
    data prepare → the grand-challenge job with region.json "Head and Neck" / "Abdomen" and an analytic model
    package of that region (no torch) → evaluate with the 2025 variant."""
    from synthct.algorithm.analytic import build_analytic_package
    from synthct.algorithm.container import run_container

    data = tmp_path / "data"
    write_phantom_dataset(data, region, 1, seed=9, progress=False)
    prepared = _run(["data", "prepare", str(data), "--region", REGION_JSON[region], "--out", str(tmp_path / "cache"),
                     "--no-progress"])
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 5
    models = tmp_path / "models"
    build_analytic_package(models / region, region)
    build_analytic_package(models / "brain", "brain")  # region.json, not the only package, picks the model
    case = data / "Task1" / FOLDERS[region] / IDS[region]
    job_in, job_out = tmp_path / "input", tmp_path / "output"
    for source, target in (("mr", "mri"), ("mask", "body")):
        (job_in / "images" / target).mkdir(parents=True)
        (job_in / "images" / target / f"{IDS[region]}.mha").write_bytes((case / f"{source}.mha").read_bytes())
    (job_in / "region.json").write_text(json.dumps(REGION_JSON[region]), encoding="utf-8")
    env = {**os.environ, "SYNTHCT_INPUT": str(job_in), "SYNTHCT_OUTPUT": str(job_out), "SYNTHCT_MODELS": str(models),
           "SYNTHCT_PROGRESS": "0", "SYNTHCT_THREADS": "1"}
    assert run_container(env) == 0
    (result,) = json.loads((job_out / "results.json").read_text(encoding="utf-8"))
    assert result["error_messages"] == []
    metrics = tmp_path / "metrics.json"
    assert synthct_main(["evaluate", "--pred", str(job_out / "images" / "synthetic-ct"), "--gt", str(data),
                         "--out", str(metrics), "--variant", "synthrad2025", "--no-progress"]) == 0
    (scores,) = json.loads(metrics.read_text(encoding="utf-8"))["results"]
    assert scores["case_id"] == IDS[region]
    assert scores["mae"] > 0 and np.isfinite(scores["psnr"]) and 0.0 < scores["ms_ssim"] < 1.0
