"""Dose evaluation: settings, structures (virtual and user), metrics, and ``synthct evaluate --dose`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.evaluation.dose import INSTALL_HINT, DoseExtraMissing, missing_modules, require_dose_extra
from synthct.evaluation.dose.config import DoseConfigError, dose_config_from_dict, load_dose_config, modalities
from synthct.evaluation.dose.dose_metrics import cumulative_dvh, dose_at_volume, dose_mae_pct, dvh_differences_pct
from synthct.evaluation.dose.structures import (
    StructureError,
    Structures,
    check_structures,
    region_of_case,
    user_structures,
    virtual_structures,
)
from train_helpers import HANG_GUARD_S

needs_extra = pytest.mark.skipif(bool(missing_modules()), reason=INSTALL_HINT)
REPO = Path(__file__).resolve().parents[1]


def head_phantom(shape: tuple[int, int, int] = (36, 44, 40), spacing: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """(hu, body) (z, y, x): an ellipsoid head — skin/soft tissue, a 2-voxel skull (1000 HU), brain (30 HU)."""
    z, y, x = np.indices(shape, dtype=np.float32)
    centre = [(n - 1) / 2 for n in shape]
    radius = np.sqrt(sum(((c - m) / (0.45 * n)) ** 2 for c, m, n in zip((z, y, x), centre, shape, strict=True)))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[radius < 1.0] = 40.0
    hu[radius < 0.88] = 1000.0
    hu[radius < 0.76] = 30.0
    return hu, radius < 1.0


def pelvis_phantom(shape: tuple[int, int, int] = (30, 50, 60)) -> tuple[np.ndarray, np.ndarray]:
    """(hu, body): an elliptic cylinder of soft tissue with a pubic bone in front and a sacrum behind (3 mm voxels)."""
    z, y, x = np.indices(shape, dtype=np.float32)
    body = ((y - 25) / 23) ** 2 + ((x - 30) / 28) ** 2 < 1.0
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    hu[(np.abs(x - 30) < 8) & (np.abs(y - 9) < 2) & (z < 12)] = 900.0  # symphysis, anterior, inferior
    hu[(np.abs(x - 30) < 6) & (np.abs(y - 42) < 2)] = 700.0  # sacrum, posterior
    hu[(np.abs(np.abs(x - 30) - 20) < 3) & (np.abs(y - 25) < 12)] = 800.0  # iliac/femoral bone, lateral
    return hu, body


# ---------------------------------------------------------------- settings


def test_dose_config_defaults_and_validation(tmp_path: Path) -> None:
    config = dose_config_from_dict({})
    assert (config.prescription_gy, config.dose_grid_mm, config.photon_beams) == (2.0, 3.0, 7)
    assert len(config.proton_gantry_deg) == 3
    assert (config.gamma_dose_pct, config.gamma_distance_mm, config.gamma_cutoff_pct) == (2.0, 2.0, 10.0)
    with pytest.raises(DoseConfigError, match=r"unknown dose setting 'dose_grid'.*dose_grid_mm"):
        dose_config_from_dict({"dose_grid": 3})
    with pytest.raises(DoseConfigError, match="photon_beams"):
        dose_config_from_dict({"photon_beams": 0})
    with pytest.raises(DoseConfigError, match="solver"):
        dose_config_from_dict({"solver": "cplex"})
    with pytest.raises(DoseConfigError, match="proton_gantry_deg"):
        dose_config_from_dict({"proton_gantry_deg": ["left"]})
    path = tmp_path / "dose.yaml"
    path.write_text("dose_grid_mm: 4\nproton_gantry_deg: [90, 270]\n", encoding="utf-8")
    loaded = load_dose_config(path, ["photon_beams=5", "region=pelvis"])
    assert (loaded.dose_grid_mm, loaded.proton_gantry_deg, loaded.photon_beams) == (4.0, (90.0, 270.0), 5)
    assert loaded.to_dict()["region"] == "pelvis"
    with pytest.raises(DoseConfigError, match="--dose-set"):
        load_dose_config(None, ["photon_beams"])
    path.write_text("bogus: 1\n", encoding="utf-8")
    with pytest.raises(DoseConfigError, match=str(path)):
        load_dose_config(path)
    assert modalities("both") == ("photon", "proton")


def test_missing_extra_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import synthct.evaluation.dose as dose

    monkeypatch.setattr(dose, "missing_modules", lambda: ["pyRadPlan"])
    with pytest.raises(DoseExtraMissing, match=r"requirements-dose.txt --no-deps.*pyRadPlan"):
        require_dose_extra()


# ---------------------------------------------------------------- metrics


def test_dose_metrics_definitions() -> None:
    ct = np.array([2.0, 2.0, 1.9, 1.0, 0.1])
    sct = np.array([2.1, 1.9, 1.9, 0.0, 0.1])
    # voxels with CT dose >= 1.8 Gy (90 % of 2 Gy): |0.1| + |0.1| + 0 over 3 voxels, in % of 2 Gy
    assert dose_mae_pct(ct, sct, 2.0) == pytest.approx(100 * 0.2 / 3 / 2.0)
    with pytest.raises(ValueError, match="no voxel"):
        dose_mae_pct(ct * 0.1, sct, 2.0)
    dose = np.arange(100, dtype=float)
    mask = np.ones(100, dtype=bool)
    assert dose_at_volume(dose, mask, 98.0) == pytest.approx(1.98)
    assert dose_at_volume(dose, mask, 2.0) == pytest.approx(97.02)
    assert dvh_differences_pct({"ptv_d98_gy": 1.9}, {"ptv_d98_gy": 1.8}, 2.0) == {
        "ptv_d98_diff_pct": pytest.approx(-5.0)
    }
    curve = cumulative_dvh(dose, mask, np.array([0.0, 50.0, 100.0]))
    assert curve.tolist() == [100.0, 50.0, 0.0]


# ---------------------------------------------------------------- structures


def test_region_of_case() -> None:
    assert region_of_case("1BA001") == "brain"
    assert region_of_case("1PC042") == "pelvis"
    assert region_of_case("case7", [Path("/data/Task1/pelvis/case7/ct.mha")]) == "pelvis"
    assert region_of_case("case7") is None


def test_virtual_brain_target_inside_skull_and_deterministic() -> None:
    hu, body = head_phantom()
    config = dose_config_from_dict({"target_radius_mm": 12.0, "oar_radius_mm": 8.0})
    first = virtual_structures(hu, body, (3.0, 3.0, 3.0), "brain", config)
    second = virtual_structures(hu, body, (3.0, 3.0, 3.0), "brain", config)
    assert first.source == "virtual-brain"
    assert np.array_equal(first.ptv, second.ptv) and first.details == second.details
    assert first.ptv.sum() > 100
    assert np.all(hu[first.ptv] == 30.0)  # brain only: behind the skull
    assert set(first.oars) == {"oar_right", "oar_posterior"}
    for oar in first.oars.values():
        assert not np.any(oar & first.ptv) and np.all(hu[oar] == 30.0)
    ptv_x = np.argwhere(first.ptv)[:, 2].mean()
    assert ptv_x > hu.shape[2] / 2  # moved towards +x from the centre
    check_structures(first, body, "case")


def test_virtual_pelvis_target_behind_symphysis() -> None:
    hu, body = pelvis_phantom()
    config = dose_config_from_dict({"target_radius_mm": 12.0, "oar_radius_mm": 8.0})
    structures = virtual_structures(hu, body, (3.0, 3.0, 3.0), "pelvis", config)
    centre = np.argwhere(structures.ptv).mean(axis=0)
    assert abs(centre[2] - 30) <= 2  # on the bony midline
    assert 9 < centre[1] < 42  # between symphysis and sacrum
    assert np.all(hu[structures.ptv] == 40.0)
    assert set(structures.oars) == {"oar_rectum", "oar_bladder"}
    rectum = np.argwhere(structures.oars["oar_rectum"]).mean(axis=0)
    assert rectum[1] > centre[1]  # behind the PTV


def test_virtual_structures_errors() -> None:
    config = dose_config_from_dict({})
    soft = np.full((20, 20, 20), 40.0, dtype=np.float32)
    with pytest.raises(StructureError, match="intracranial"):
        virtual_structures(soft, soft > 0, (3.0, 3.0, 3.0), "brain", config)
    with pytest.raises(StructureError, match="bone"):
        virtual_structures(soft, soft > 0, (3.0, 3.0, 3.0), "pelvis", config)
    with pytest.raises(StructureError, match="region"):
        virtual_structures(soft, soft > 0, (3.0, 3.0, 3.0), "thorax", config)


def _write(array: np.ndarray, path: Path, spacing: tuple[float, ...] = (3.0, 3.0, 3.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def test_user_structures_and_their_errors(tmp_path: Path) -> None:
    hu, body = head_phantom()
    reference = sitk.GetImageFromArray(hu)
    reference.SetSpacing((3.0, 3.0, 3.0))
    ptv = np.zeros(hu.shape, dtype=np.uint8)
    ptv[15:20, 18:24, 16:22] = 1
    oar = np.zeros_like(ptv)
    oar[15:20, 18:24, 24:28] = 1
    _write(ptv, tmp_path / "1BA001" / "ptv.mha")
    _write(oar, tmp_path / "1BA001" / "oar_chiasm.nii.gz")
    structures = user_structures(tmp_path, "1BA001", reference)
    assert structures.source == "user" and set(structures.oars) == {"oar_chiasm"}
    assert structures.ptv.sum() == ptv.sum()
    check_structures(structures, body, "case 1BA001")

    with pytest.raises(StructureError, match="no structure folder"):
        user_structures(tmp_path, "1BA002", reference)
    _write(ptv, tmp_path / "1BA003" / "ptv.mha", spacing=(2.0, 3.0, 3.0))
    with pytest.raises(StructureError, match=r"ptv.mha: structure geometry differs"):
        user_structures(tmp_path, "1BA003", reference)
    (tmp_path / "1BA004").mkdir()
    with pytest.raises(StructureError, match="no ptv"):
        user_structures(tmp_path, "1BA004", reference)
    empty = Structures(np.zeros(hu.shape, dtype=bool), {}, "user")
    with pytest.raises(StructureError, match="empty"):
        check_structures(empty, body, "case X")
    outside = np.zeros(hu.shape, dtype=bool)
    outside[:3, :3, :3] = True
    with pytest.raises(StructureError, match="outside the body"):
        check_structures(Structures(outside, {}, "user"), body, "case X")


# ---------------------------------------------------------------- end to end


def _case(root: Path, case_id: str, hu: np.ndarray, body: np.ndarray) -> None:
    _write(hu.astype(np.int16), root / "gt" / case_id / "ct.mha")
    _write(body.astype(np.uint8), root / "gt" / case_id / "mask.mha")


@needs_extra
def test_evaluate_with_dose_end_to_end(tmp_path: Path) -> None:
    """Two brain cases, sCT = CT for the first (dose MAE 0, gamma 100 %), a structure error for the second; the
    image metrics of both come out, the dose error is a per-case record, settings are in metrics.json."""
    hu, body = head_phantom()
    _case(tmp_path, "1BA001", hu, body)
    _case(tmp_path, "1BA002", hu, body)
    _write(hu.astype(np.int16), tmp_path / "pred" / "1BA001.mha")
    shifted = np.where(body, hu + 20.0, hu).astype(np.int16)
    _write(shifted, tmp_path / "pred" / "1BA002.mha")
    ptv = np.zeros(hu.shape, dtype=np.uint8)
    ptv[15:20, 18:24, 16:22] = 1
    _write(ptv, tmp_path / "structures" / "1BA001" / "ptv.mha")
    _write(np.zeros_like(ptv), tmp_path / "structures" / "1BA002" / "ptv.mha")  # empty: a per-case error
    out = tmp_path / "metrics.json"
    command = [
        sys.executable, "-m", "synthct", "evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
        "--out", str(out), "--pictures", str(tmp_path / "pictures"), "--no-progress",
        "--dose", "both", "--structures", str(tmp_path / "structures"),
        "--dose-set", "dose_grid_mm=5", "--dose-set", "photon_beams=3", "--dose-set", "max_iterations=40",
        "--dose-set", "proton_gantry_deg=[90, 270]", "--dose-set", "proton_spot_mm=6",
    ]
    done = subprocess.run(command, capture_output=True, cwd=REPO, timeout=HANG_GUARD_S)
    stderr = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode == 1, stderr  # one case's dose failed
    payload = json.loads(out.read_text(encoding="utf-8"))
    first, second = payload["results"]
    assert first["error"] is None and first["dose_error"] is None
    # the sCT is recalculated, not copied: float32 summation order in the photon engine leaves ~1e-5 % Rx
    assert first["photon_dose_mae_pct"] < 1e-3 and first["proton_dose_mae_pct"] < 1e-3
    assert first["photon_gamma_pass_pct"] == 100.0 and first["proton_gamma_pass_pct"] == 100.0
    assert first["dose"]["structures"]["source"] == "user"
    assert abs(first["dose"]["photon"]["dvh_diff_pct"]["ptv_d98_diff_pct"]) < 1e-3
    assert second["error"] is None and second["mae"] == pytest.approx(20.0)  # image metrics kept
    assert "1BA002" in second["dose_error"] and "empty" in second["dose_error"]
    assert second["photon_dose_mae_pct"] is None
    for key in ("photon_dose_mae_pct", "photon_gamma_pass_pct", "proton_dose_mae_pct", "proton_gamma_pass_pct"):
        assert set(payload["aggregates"][key]) == set(payload["aggregates"]["mae"])
        assert payload["aggregates"][key]["count"] == 1
    assert payload["aggregates"]["mae"]["count"] == 2
    assert payload["cases"]["dose_failed"] == 1
    assert payload["dose"]["settings"]["dose_grid_mm"] == 5.0
    assert payload["dose"]["settings"]["prescription_gy"] == 2.0
    assert payload["dose"]["modalities"] == ["photon", "proton"]
    for modality in ("photon", "proton"):
        assert (tmp_path / "pictures" / f"1BA001_{modality}_dose.png").stat().st_size > 10_000
    report = (tmp_path / "pictures" / "report.md").read_text(encoding="utf-8")
    assert "## Dose" in report and "[photon](1BA001_photon_dose.png)" in report and "1BA002** dose error" in report


def test_evaluate_dose_options_need_dose(tmp_path: Path) -> None:
    hu, body = head_phantom((12, 12, 12))
    _case(tmp_path, "1BA001", hu, body)
    _write(hu.astype(np.int16), tmp_path / "pred" / "1BA001.mha")
    command = [sys.executable, "-m", "synthct", "evaluate", "--pred", str(tmp_path / "pred"), "--gt",
               str(tmp_path / "gt"), "--out", str(tmp_path / "m.json"), "--dose-set", "dose_grid_mm=4"]
    done = subprocess.run(command, capture_output=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert "need --dose" in done.stderr.decode("utf-8", errors="replace")
    assert not (tmp_path / "m.json").exists()


def test_ct_grid_coarsening_keeps_origin_and_structures() -> None:
    """CT finer than ct_grid_mm is resampled for the ray tracing: voxel 0 stays at 0 mm, masks stay masks."""
    from synthct.evaluation.dose.planning import _coarsen

    hu = np.zeros((20, 40, 40), dtype=np.float32)
    hu[:, :, 20:] = 100.0  # x >= 20 mm
    body = np.ones(hu.shape, dtype=bool)
    ptv = np.zeros(hu.shape, dtype=bool)
    ptv[8:12, 10:30, 10:30] = True
    coarse = _coarsen(hu, hu, body, Structures(ptv, {"oar_a": ptv.copy()}, "t"), (2.0, 1.0, 1.0), 2.0)
    ct2, sct2, body2, structures2, spacing2 = coarse
    assert sct2.shape == ct2.shape
    assert spacing2 == (2.0, 2.0, 2.0) and ct2.shape == (20, 20, 20)
    assert ct2[0, 0, 9] == 0.0 and ct2[0, 0, 10] == 100.0  # x = 20 mm is voxel 10 at 2 mm
    assert body2.all() and structures2.ptv.dtype == bool and set(structures2.oars) == {"oar_a"}
    assert structures2.ptv.sum() * 8 == pytest.approx(ptv.sum() * 2, rel=0.3)
    same = _coarsen(hu, hu, body, Structures(ptv, {}, "t"), (2.0, 2.0, 2.0), 2.0)
    assert same[0] is hu


def _rtstruct(path: Path, rois: dict[str, list[np.ndarray]], modality: str = "RTSTRUCT") -> Path:
    """A minimal RTSTRUCT: ``rois`` maps ROI name → closed planar contours (N×3 patient mm)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [float(v) for v in np.asarray(points).ravel()]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _square(z_mm: float, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0, z_mm], [x1, y0, z_mm], [x1, y1, z_mm], [x0, y1, z_mm]])


def test_rtstruct_structures_rasterised_on_the_ct_grid(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    reference = sitk.Image(40, 30, 20, sitk.sitkUInt8)  # x, y, z
    reference.SetSpacing((2.0, 2.0, 3.0))
    reference.SetOrigin((-40.0, -30.0, -30.0))
    # PTV: x -11…11 mm, y -7…7 mm on z = -3, 0, 3 mm; a 6 mm hole (nested contour) at z = 0
    ptv = [_square(z, -11.0, 11.0, -7.0, 7.0) for z in (-3.0, 0.0, 3.0)] + [_square(0.0, -3.0, 3.0, -3.0, 3.0)]
    rois = {"PTV_60": ptv, "Spinal Cord": [_square(0.0, 14.0, 20.0, -2.0, 2.0)],
            "BODY": [_square(0.0, -39, 39, -29, 29)], "Empty": []}
    _rtstruct(tmp_path / "1BA001" / "RS.1BA001.dcm", rois)
    structures = user_structures(tmp_path, "1BA001", reference)
    assert structures.source == "user-rtstruct" and structures.details["ptv_rois"] == ["PTV_60"]
    assert set(structures.oars) == {"oar_spinal_cord"}
    # voxel centres x = -40 + 2i inside (-11, 11): i = 15…25 (11), y = -30 + 2j inside (-7, 7): j = 12…18 (7)
    assert structures.ptv[9].sum() == 77 and structures.ptv[11].sum() == 77  # z = -3 mm → k = 9, z = 3 mm → k = 11
    assert structures.ptv[10].sum() == 77 - 9  # the hole holds 3 × 3 voxel centres
    assert structures.ptv.sum() == 77 + 68 + 77
    assert not structures.ptv[10, 15, 20] and structures.ptv[10, 15, 17]
    _rtstruct(tmp_path / "1BA002" / "RS.dcm", {"GTV": ptv})
    with pytest.raises(StructureError, match="no ROI named PTV"):
        user_structures(tmp_path, "1BA002", reference)
    _rtstruct(tmp_path / "1BA003" / "CT.dcm", {"PTV": ptv}, modality="CT")
    with pytest.raises(StructureError, match="not an RTSTRUCT"):
        user_structures(tmp_path, "1BA003", reference)


@needs_extra
def test_container_dose_request_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthct.evaluation.container import dose_request_from_env

    monkeypatch.delenv("SYNTHCT_DOSE", raising=False)
    assert dose_request_from_env() is None
    monkeypatch.setenv("SYNTHCT_DOSE", "proton")
    monkeypatch.setenv("SYNTHCT_DOSE_SET", "dose_grid_mm=4; proton_gantry_deg=[90, 270]")
    monkeypatch.setenv("SYNTHCT_STRUCTURES", str(tmp_path))
    request = dose_request_from_env()
    assert request.modalities == ("proton",) and request.config.dose_grid_mm == 4.0
    assert request.config.proton_gantry_deg == (90.0, 270.0)
    assert request.structures_dir is None  # no case folder in it: virtual targets
    (tmp_path / "1BA001").mkdir()
    assert dose_request_from_env().structures_dir == tmp_path
    monkeypatch.setenv("SYNTHCT_DOSE", "electrons")
    with pytest.raises(ValueError, match="electrons"):
        dose_request_from_env()
    monkeypatch.setenv("SYNTHCT_DOSE", "both")
    monkeypatch.setenv("SYNTHCT_DOSE_SET", "photon_beam=5")
    with pytest.raises(ValueError, match="photon_beams"):
        dose_request_from_env()
