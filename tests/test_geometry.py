"""The geometry the network sees (synthct.geometry, SPEC §12): one canonical orientation, the training spacing.

The model here is an analytic package that convolves the MR with an asymmetric 3-D kernel before its voxel-wise
map, so — like a trained network — its output depends on which patient axis is stored as which array axis, on
flips and on the voxel spacing. A package without the geometry record runs as before this issue (the MR's grid
as stored): the tests show that this gives other HU, so they fail on the code without the geometry step.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package
from synthct.algorithm.backends import make_predictor
from synthct.algorithm.inference import predict_case

from synthct.cli import main as synthct_main
from synthct.geometry import (
    CANONICAL_ORIENTATION,
    GeometryError,
    NetworkGeometry,
    canonical_reorientation,
    orientation_code,
    resample_onto,
    resampled_grid,
    to_network_grid,
    training_geometry,
)
from synthct.model_package import ModelPackage, ModelPackageError, load_model_package
from synthct.phantom.generate import generate_case

KERNEL = np.einsum("z,y,x->zyx", np.array([0.5, 0.3, 0.2]), np.array([0.6, 0.3, 0.1]),
                   np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02]))
"""Asymmetric along every axis (z, y, x): the output changes with any permutation or flip of the axes."""
LAYOUTS = {  # name → (SimpleITK PermuteAxes order, Flip axes): the same physical image stored another way
    "sagittal": ((1, 2, 0), (False, False, False)),
    "coronal": ((0, 2, 1), (False, False, False)),
    "flipped": ((0, 1, 2), (True, True, False)),
    "sagittal, flipped": ((2, 0, 1), (False, True, True)),
}


@pytest.fixture(scope="module")
def phantom() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """A small brain phantom (axial, LPS, 1 mm): MR, CT, mask."""
    return generate_case("brain", 3, "small")


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelPackage]:
    root = tmp_path_factory.mktemp("geometry_packages")
    with_geometry = build_analytic_package(root / "brain", kernel=KERNEL, spacing_zyx_mm=(1.0, 1.0, 1.0))
    without = build_analytic_package(root / "old" / "brain", kernel=KERNEL, geometry=False)
    return {"with": load_model_package(with_geometry), "without": load_model_package(without)}


def _predict(mr: sitk.Image, mask: sitk.Image, package: ModelPackage, resample: str = "auto") -> tuple[sitk.Image,
                                                                                                        dict]:
    predictor = make_predictor(package, "onnxruntime", "cpu", 1)
    return predict_case(mr, mask, package, predictor, batch_size=2, progress=False, resample=resample)  # type: ignore[arg-type]


def _on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` at ``reference``'s voxel centres; nearest neighbour, exact where the centres coincide."""
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, -2000,
                                                image.GetPixelID()))


def _stored_as(image: sitk.Image, layout: str) -> sitk.Image:
    order, flips = LAYOUTS[layout]
    return sitk.Flip(sitk.PermuteAxes(image, order), flips)


# ---------------------------------------------------------------------------------------------- orientation
def test_every_permutation_and_flip_comes_back_to_the_canonical_grid_exactly() -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    reference = sitk.GetImageFromArray(array)
    reference.SetSpacing((0.8, 1.1, 2.5))
    reference.SetOrigin((-10.0, 4.0, 30.0))
    seen = set()
    for order in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            stored = sitk.Flip(sitk.PermuteAxes(reference, order), flips)
            reorientation = canonical_reorientation(stored)
            seen.add(reorientation.source)
            canonical = reorientation.apply_to_image(stored)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(canonical), array)
            assert canonical.GetSpacing() == pytest.approx(reference.GetSpacing())
            assert canonical.GetOrigin() == pytest.approx(reference.GetOrigin())
            assert canonical.GetDirection() == pytest.approx(reference.GetDirection())
            stored_array = sitk.GetArrayFromImage(stored)
            np.testing.assert_array_equal(reorientation.undo(reorientation.apply(stored_array)), stored_array)
            np.testing.assert_array_equal(reorientation.undo(array), stored_array)
    assert len(seen) == 48  # every orientation code


def test_orientation_codes() -> None:
    assert orientation_code((1, 0, 0, 0, 1, 0, 0, 0, 1)) == CANONICAL_ORIENTATION == "LPS"
    assert orientation_code((-1, 0, 0, 0, -1, 0, 0, 0, 1)) == "RAS"
    assert orientation_code((0, 0, 1, 1, 0, 0, 0, -1, 0)) == "PIL"  # sagittal stack: columns (x, y, z) → P, I, L
    angle = np.radians(20)  # 20° oblique about z: still closest to LPS, the residual rotation is kept
    c, s = np.cos(angle), np.sin(angle)
    oblique = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    oblique.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    reorientation = canonical_reorientation(oblique)
    assert reorientation.is_identity and reorientation.source == "LPS"


def test_geometry_record_is_validated(tmp_path: Path) -> None:
    assert training_geometry([(2.5, 1.0, 1.0), (3.0, 0.9, 0.9), (2.5, 1.1, 1.0)]).spacing_zyx_mm == (2.5, 1.0, 1.0)
    for bad in ({"orientation": "RAS", "spacing_zyx_mm": [1, 1, 1]}, {"orientation": "LPS", "spacing_zyx_mm": [1, 1]},
                {"orientation": "LPS", "spacing_zyx_mm": [1, 0, 1]}, "LPS",
                {"orientation": "LPS", "spacing_zyx_mm": [1, 1, 1], "spacing_tolerance": 2}):
        with pytest.raises(ValueError):
            NetworkGeometry.from_dict(bad)
    folder = build_analytic_package(tmp_path / "brain", spacing_zyx_mm=(1.0, 1.0, 1.0))
    manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    manifest["geometry"]["spacing_zyx_mm"] = [1.0, -1.0, 1.0]
    (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelPackageError, match="spacing_zyx_mm"):
        load_model_package(folder)


# -------------------------------------------------------------------------------------------- whole pipeline
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_same_hu_at_the_same_points_whatever_the_stored_layout(
        layout: str, phantom: tuple[sitk.Image, sitk.Image, sitk.Image], packages: dict[str, ModelPackage]) -> None:
    mr, _, mask = phantom
    reference, record = _predict(mr, mask, packages["with"])
    assert not record["reoriented"] and not record["resampled"]
    stored_mr, stored_mask = _stored_as(mr, layout), _stored_as(mask, layout)
    sct, record = _predict(stored_mr, stored_mask, packages["with"])
    # the sCT keeps the stored MR's grid ...
    assert (sct.GetSize(), sct.GetSpacing(), sct.GetOrigin(), sct.GetDirection()) == (
        stored_mr.GetSize(), stored_mr.GetSpacing(), stored_mr.GetOrigin(), stored_mr.GetDirection())
    assert record["reoriented"] and not record["resampled"] and record["mr_orientation"] != "LPS"
    # ... and equals the axial acquisition's sCT at the same physical points, to the voxel
    np.testing.assert_array_equal(_on_grid(sct, reference), sitk.GetArrayFromImage(reference))
    # the code before this issue (no geometry record: the network sees the stored grid) gives other HU
    before, record = _predict(stored_mr, stored_mask, packages["without"])
    assert not record["checked"]
    body = sitk.GetArrayViewFromImage(mask) > 0
    difference = np.abs(_on_grid(before, reference).astype(np.float64) - sitk.GetArrayFromImage(reference))[body]
    assert difference.mean() > 20.0


def test_anisotropic_acquisition_is_resampled_and_within_the_acquisitions_own_error(
        phantom: tuple[sitk.Image, sitk.Image, sitk.Image], packages: dict[str, ModelPackage]) -> None:
    """The phantom "acquired" at 0.5 × 0.5 × 3 mm (z 3 mm). Bound: the error the acquisition itself causes.

    ``floor`` = the model on the 1 mm MR vs the model on the 1 mm MR rebuilt from the 3 mm acquisition (what the
    network sees after resampling): detail lost between 3 mm slices cannot come back. The pipeline's sCT on the
    acquisition's own grid may differ from the 1 mm sCT by that floor plus the cost of interpolating the sCT
    back (measured with this kernel: 105 HU vs a floor of 121 HU; at 1 × 0.7 × 0.7 mm 58 vs 56 HU; bound
    1.25 × floor), and must be far closer than without resampling (350 HU measured).
    """
    mr, _, mask = phantom
    package = packages["with"]
    reference, _ = _predict(mr, mask, package)
    grid = resampled_grid(mr, (3.0, 0.5, 0.5))
    acquired = resample_onto(sitk.Cast(mr, sitk.sitkFloat32), grid, sitk.sitkLinear, 0.0)
    acquired_mask = resample_onto(mask, grid, sitk.sitkNearestNeighbor, 0)
    sct, record = _predict(acquired, acquired_mask, package)
    assert record["resampled"] and record["training_spacing_zyx_mm"] == [1.0, 1.0, 1.0]
    assert record["mr_spacing_zyx_mm"] == [3.0, 0.5, 0.5] and record["spacing_difference"] == pytest.approx(2.0)
    assert sct.GetSize() == acquired.GetSize() and sct.GetSpacing() == acquired.GetSpacing()
    body = sitk.GetArrayViewFromImage(acquired_mask) > 0
    assert np.all(sitk.GetArrayViewFromImage(sct)[~body] == -1000)
    expected = sitk.GetArrayFromImage(resample_onto(sitk.Cast(reference, sitk.sitkFloat32), grid, sitk.sitkLinear,
                                                    -1000.0))
    error = np.abs(sitk.GetArrayFromImage(sct).astype(np.float64) - expected)[body].mean()
    # the floor, on the 1 mm grid
    rebuilt = resample_onto(acquired, mr, sitk.sitkLinear, 0.0)
    from_rebuilt, _ = _predict(rebuilt, mask, package)
    one_mm_body = sitk.GetArrayViewFromImage(mask) > 0
    floor = np.abs(sitk.GetArrayFromImage(from_rebuilt).astype(np.float64)
                   - sitk.GetArrayFromImage(reference))[one_mm_body].mean()
    assert error <= 1.25 * floor, (error, floor)
    never, record = _predict(acquired, acquired_mask, package, resample="never")
    assert not record["resampled"] and "--resample never" in record["summary"]
    error_never = np.abs(sitk.GetArrayFromImage(never).astype(np.float64) - expected)[body].mean()
    assert error_never > 2 * error, (error_never, error)


def test_within_tolerance_is_not_resampled_and_gaps_are_refused(
        phantom: tuple[sitk.Image, sitk.Image, sitk.Image]) -> None:
    mr, _, mask = phantom
    geometry = NetworkGeometry("LPS", (1.0, 1.0, 1.0), 0.1)
    near = sitk.Image(mr)
    near.SetSpacing((1.05, 0.95, 1.08))
    near_mask = sitk.Image(mask)
    near_mask.CopyInformation(near)
    grid = to_network_grid(near, near_mask, geometry)
    assert not grid.resampled and "within 10%" in grid.record["summary"]
    far = sitk.Image(mr)
    far.SetSpacing((1.0, 1.0, 3.0))
    far_mask = sitk.Image(mask)
    far_mask.CopyInformation(far)
    with pytest.raises(GeometryError, match=r"gaps of 2 mm, larger than the slices"):
        to_network_grid(far, far_mask, geometry, slice_thickness_mm=1.0, name="mr.dcm")
    assert to_network_grid(far, far_mask, geometry, slice_thickness_mm=3.0).resampled  # contiguous 3 mm slices
    assert not to_network_grid(far, far_mask, geometry, "never", slice_thickness_mm=1.0).resampled


def test_predict_records_the_geometry_in_results_and_on_the_qa_page(
        tmp_path: Path, phantom: tuple[sitk.Image, sitk.Image, sitk.Image], packages: dict[str, ModelPackage]) -> None:
    mr, _, mask = phantom
    sitk.WriteImage(_stored_as(mr, "sagittal"), str(tmp_path / "case.mha"))
    sitk.WriteImage(_stored_as(mask, "sagittal"), str(tmp_path / "case_mask.mha"))
    for package, out in ((packages["with"], tmp_path / "new"), (packages["without"], tmp_path / "old")):
        assert synthct_main(["predict", "--no-progress", "--mr", str(tmp_path / "case.mha"), "--mask",
                             str(tmp_path / "case_mask.mha"), "--model", str(package.directory), "--out",
                             str(out), "--backend", "onnxruntime"]) == 0
    new = json.loads((tmp_path / "new" / "results.json").read_text(encoding="utf-8"))[0]
    assert new["geometry"]["checked"] and new["geometry"]["mr_orientation"] == "PSL"
    assert "reoriented PSL → LPS" in new["geometry"]["summary"] and "warnings" not in new
    assert "reoriented PSL → LPS" in (tmp_path / "new" / "qa" / "index.html").read_text(encoding="utf-8")
    old = json.loads((tmp_path / "old" / "results.json").read_text(encoding="utf-8"))[0]
    assert not old["geometry"]["checked"]
    assert any("not checked" in warning for warning in old["warnings"])  # the user is told what was not checked
    assert "orientation and spacing not checked" in (tmp_path / "old" / "qa" / "index.html").read_text(
        encoding="utf-8")


def test_dicom_stack_with_gaps_is_a_per_case_error(
        tmp_path: Path, phantom: tuple[sitk.Image, sitk.Image, sitk.Image], packages: dict[str, ModelPackage]) -> None:
    """2-D multi-slice MR: 1 mm slices every 3 mm cannot be resampled to 1 mm; a gap-free series still runs."""
    import pydicom

    from synthct.dicom import write_mr_series

    mr, _, _ = phantom
    gappy = sitk.GetImageFromArray(sitk.GetArrayFromImage(mr)[::3])
    gappy.SetSpacing((1.0, 1.0, 3.0))
    gappy.SetOrigin(mr.GetOrigin())
    write_mr_series(gappy, tmp_path / "mr" / "gappy")
    for path in (tmp_path / "mr" / "gappy").iterdir():
        dataset = pydicom.dcmread(path)
        dataset.SliceThickness = "1.0"
        dataset.save_as(path)
    write_mr_series(mr, tmp_path / "mr" / "contiguous")
    out = tmp_path / "out"
    status = synthct_main(["predict", "--no-progress", "--mr", str(tmp_path / "mr"), "--model",
                           str(packages["with"].directory), "--out", str(out), "--backend", "onnxruntime"])
    assert status == 1
    results = {Path(e["inputs"][0]["filename"]).name: e for e in json.loads((out / "results.json").read_text())}
    message = " ".join(results["gappy"]["error_messages"])
    assert "gappy" in message and "gaps of 2 mm, larger than the slices" in message
    assert results["contiguous"]["error_messages"] == [] and (out / "contiguous.mha").is_file()


def test_qa_figures_and_flags_do_not_depend_on_the_stored_layout(
        tmp_path: Path, phantom: tuple[sitk.Image, sitk.Image, sitk.Image]) -> None:
    """The QA page reorients before measuring: "in-plane" (FOV border) means transverse for a sagittal MR too."""
    from synthct.algorithm.qa import qa_case

    mr, ct, mask = phantom
    rows = {layout: qa_case(layout.replace(",", "").replace(" ", "_"), "brain", _stored_as(mr, layout),
                            _stored_as(ct, layout), _stored_as(mask, layout), tmp_path)
            for layout in ("sagittal", "flipped")}
    axial = qa_case("axial", "brain", mr, ct, mask, tmp_path)
    for row in rows.values():
        for key in ("flags", "mean_hu", "bone_fraction", "air_fraction_core", "size", "spacing_mm"):
            assert row[key] == axial[key], key
