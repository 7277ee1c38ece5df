"""Issue 15: ``--dicom-out`` from a non-transverse MR (sagittal, coronal, oblique) writes a transverse planning CT.

The model is the analytic package, the MRs are the small brain phantom resampled onto sagittal / coronal / oblique
grids and written as DICOM series. The CT series is checked against the ``.mha`` sCT (on the MR's grid) at the same
physical points with an independent trilinear interpolation (scipy, continuous indices computed here from the
geometry): where a CT voxel centre is an MR voxel centre the HU are the sCT's own (measured: 0 HU difference);
elsewhere inside the body the difference to the independent interpolant is at most 0.5 HU (int16 rounding) plus
float32 arithmetic (measured max 0.5001 HU over the sagittal, coronal and oblique cases: bound 0.51 HU), and every
value lies within its 8 MR neighbours' range (a convex combination). For scale: the mean |CT − nearest MR voxel's
sCT| inside the body is 90–125 HU on this textured phantom, the inherent effect of sampling between MR voxels.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage
from synthct.algorithm.analytic import build_analytic_package
from test_predict_clinical import PARAMS, dciodvfy_errors, phantom_mr, predict, rotation

from synthct.dicom import read_dicom_series, write_ct_series, write_mr_series
from synthct.dicom.transverse import (
    AIR_HU,
    MARGIN_MM,
    TRANSVERSE_MAX_ANGLE_DEG,
    dicom_ct_grid,
    is_transverse,
    slice_plane,
    transverse_grid,
)

HU_BOUND = 0.51
"""Largest |CT − trilinear sCT| inside the body (HU): 0.5 for rounding to integers + float32 slack (measured 0.5001)."""
TRANSVERSE_IOP = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

SAGITTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T
"""Columns: rows run anterior → posterior, columns superior → inferior, slices right → left (normal = row × col)."""
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T
MR_DIRECTIONS = {
    "sagittal": SAGITTAL,
    "coronal": CORONAL,
    "oblique45": rotation((1.0, 0.0, 0.0), 45.0),
    "oblique23": rotation((1.0, 0.4, 0.2), 23.0),  # test_predict_clinical's oblique: 22.6° from z, not transverse
    "tilted8": rotation((1.0, 0.0, 0.0), 8.0),  # transverse within 10°: keeps its grid
    "axial": np.eye(3),
}
MR_SPACING = (1.0, 1.0, 2.0)
"""In-plane 1 mm, slices 2 mm: the transverse CT gets 1 mm everywhere, half its slices on the MR's lattice."""


def reoriented(image: sitk.Image, direction: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """``image`` resampled (linear) onto a grid with ``direction`` (columns = axes) and ``spacing`` covering it."""
    old = np.asarray(image.GetDirection()).reshape(3, 3)
    size = np.asarray(image.GetSize())
    corners = np.array([[(size[a] - 1) if (k >> a) & 1 else 0 for a in range(3)] for k in range(8)], float)
    points = np.asarray(image.GetOrigin()) + (corners * np.asarray(image.GetSpacing())) @ old.T
    local = points @ direction
    low, high = local.min(axis=0), local.max(axis=0)
    reference = sitk.Image([int(n) for n in np.floor((high - low) / spacing) + 1], sitk.sitkFloat32)
    reference.SetSpacing(spacing)
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin((direction @ low).tolist())
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def make_mr(name: str) -> sitk.Image:
    """The phantom MR (uint16) on the named grid; ``left_sagittal``: sagittal with its z axis flipped."""
    if name == "left_sagittal":
        image = sitk.Flip(make_mr("sagittal"), [False, False, True])
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        assert np.linalg.det(direction) < 0
        return image
    return sitk.Cast(sitk.Round(reoriented(phantom_mr(), MR_DIRECTIONS[name], MR_SPACING)), sitk.sitkUInt16)



@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_analytic_package(tmp_path_factory.mktemp("models") / "brain", "brain", **PARAMS)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory, package: Path) -> tuple[Path, Path, dict[str, dict]]:
    """Every MR of MR_DIRECTIONS as a DICOM series, and the left-handed sagittal one as an image file, through
    ``synthct predict --dicom-out`` with the default ``--ct-grid transverse``."""
    root = tmp_path_factory.mktemp("transverse")
    mr_root, out = root / "mr", root / "out"
    for name in MR_DIRECTIONS:
        write_mr_series(make_mr(name), mr_root / name, shuffle_seed=2)
    sitk.WriteImage(make_mr("left_sagittal"), str(mr_root / "left_sagittal.mha"))
    assert predict("--mr", mr_root, "--model", package, "--out", out, "--dicom-out", "--no-qa") == 0
    entries = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return mr_root, out, {Path(e["inputs"][0]["filename"]).name.removesuffix(".mha"): e for e in entries}


def read_series(folder: Path) -> tuple[sitk.Image, list[pydicom.Dataset]]:
    """The CT series as SimpleITK reads it, and every file's dataset (slice order)."""
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute(), [pydicom.dcmread(name) for name in names]


def continuous_index(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) indices of physical ``points`` (n, 3) in ``image``, computed here with numpy."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return ((points - np.asarray(image.GetOrigin())) @ direction) / np.asarray(image.GetSpacing())


def ct_points(ct: sitk.Image) -> np.ndarray:
    """Physical centres (n, 3) of every voxel of ``ct`` in array order (z, y, x)."""
    size = ct.GetSize()
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in size[::-1]), indexing="ij")
    index = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    return np.asarray(ct.GetOrigin()) + (index * np.asarray(ct.GetSpacing())) @ direction.T


def compare_hu(ct: sitk.Image, sct: sitk.Image, mask: sitk.Image) -> dict[str, float]:
    """Check the CT's HU against the sCT at the same physical points; returns the measured differences (HU)."""
    hu = sitk.GetArrayFromImage(ct).astype(np.float64).ravel()
    sct_values = sitk.GetArrayFromImage(sct).astype(np.float64)
    body = (sitk.GetArrayFromImage(mask) > 0).astype(np.float64)
    index = continuous_index(sct, ct_points(ct))
    size = np.asarray(sct.GetSize())
    outside = np.any((index < -0.5 - 1e-3) | (index > size - 0.5 + 1e-3), axis=1)
    assert np.all(hu[outside] == AIR_HU)  # outside the MR's field of view
    inner = np.all((index >= 0) & (index <= size - 1), axis=1)
    coords = index[inner][:, ::-1].T  # (z, y, x) rows for scipy
    reference = ndimage.map_coordinates(sct_values, coords, order=1, mode="nearest")
    in_body = ndimage.map_coordinates(body, coords, order=1, mode="nearest")
    values = hu[inner]
    clear = np.abs(in_body - 0.5) > 1e-3  # the 0.5 threshold itself is a float tie
    assert np.all(values[clear & (in_body < 0.5)] == AIR_HU)
    check = clear & (in_body >= 0.5)
    assert check.sum() > 1000
    difference = np.abs(values[check] - reference[check])
    assert difference.max() <= HU_BOUND, difference.max()
    # a convex combination: within the range of the 8 MR voxels around the point (± 0.5 HU rounding)
    base = np.minimum(np.floor(coords).astype(np.int64), (sct_values.shape - np.array([2, 2, 2]))[:, None])
    corners = [sct_values[base[0] + dz, base[1] + dy, base[2] + dx] for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)
    assert np.all(values[check] >= low[check] - 0.5) and np.all(values[check] <= high[check] + 0.5)
    # CT voxel centres that are MR voxel centres: the sCT's own value
    on_lattice = np.all(np.abs(coords - np.rint(coords)) < 1e-4, axis=0) & check
    lattice_difference = np.abs(values[on_lattice] - sct_values[tuple(np.rint(coords[:, on_lattice]).astype(int))])
    nearest = sct_values[tuple(np.clip(np.rint(coords), 0, np.array(sct_values.shape)[:, None] - 1).astype(int))]
    return {"max_abs": float(difference.max()), "mean_abs": float(difference.mean()),
            "n_lattice": int(on_lattice.sum()),
            "lattice_max_abs": float(lattice_difference.max()) if on_lattice.any() else math.nan,
            "mean_abs_vs_nearest": float(np.abs(values[check] - nearest[check]).mean())}


def body_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Physical bounding box (low, high) of the body voxels' full extents."""
    z, y, x = np.nonzero(sitk.GetArrayFromImage(mask) > 0)
    first, last = np.array([x.min(), y.min(), z.min()]) - 0.5, np.array([x.max(), y.max(), z.max()]) + 0.5
    corners = np.array([[(last if (k >> a) & 1 else first)[a] for a in range(3)] for k in range(8)])
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    points = np.asarray(mask.GetOrigin()) + (corners * np.asarray(mask.GetSpacing())) @ direction.T
    return points.min(axis=0), points.max(axis=0)


def assert_covers_body(ct: sitk.Image, mask: sitk.Image, mr: sitk.Image) -> None:
    """The CT grid holds every body voxel centre and is no larger than the body box + margin (+ one MR step)."""
    body = np.stack(np.nonzero(sitk.GetArrayFromImage(mask) > 0)[::-1], axis=1).astype(np.float64)
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    points = np.asarray(mask.GetOrigin()) + (body * np.asarray(mask.GetSpacing())) @ direction.T
    index = continuous_index(ct, points)
    assert np.all(index >= -0.5) and np.all(index <= np.asarray(ct.GetSize()) - 0.5)
    low, high = body_box(mask)
    spacing = np.asarray(ct.GetSpacing())
    ct_low = np.asarray(ct.GetOrigin()) - spacing / 2
    ct_high = ct_low + np.asarray(ct.GetSize()) * spacing
    slack = max(mr.GetSpacing()) + spacing
    assert np.all(ct_low >= low - MARGIN_MM - slack) and np.all(ct_high <= high + MARGIN_MM + slack)


def assert_transverse_series(folder: Path, slice_mm: float) -> tuple[sitk.Image, list[pydicom.Dataset]]:
    ct, datasets = read_series(folder)
    np.testing.assert_allclose(ct.GetDirection(), np.eye(3).ravel(), atol=1e-9)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    np.testing.assert_allclose(np.diff(positions[:, 2]), slice_mm, atol=1e-4)
    np.testing.assert_allclose(positions[:, :2] - positions[0, :2], 0.0, atol=1e-6)
    for ds in datasets:
        assert [float(v) for v in ds.ImageOrientationPatient] == TRANSVERSE_IOP
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert float(ds.SliceThickness) == pytest.approx(slice_mm) and float(ds.SpacingBetweenSlices) == \
            pytest.approx(slice_mm)
    return ct, datasets


# ---------------------------------------------------------------- sagittal, coronal, oblique → transverse


@pytest.mark.parametrize("name", ["sagittal", "coronal", "oblique45", "oblique23"])
def test_non_transverse_dicom_mr_gives_transverse_ct(default_run: tuple[Path, Path, dict[str, dict]],
                                                     name: str) -> None:
    mr_root, out, entries = default_run
    entry = entries[name]
    assert entry["error_messages"] == []
    mr = read_dicom_series(mr_root / name)
    assert not is_transverse(mr.image)[0]
    sct = sitk.ReadImage(str(out / f"{name}.mha"))
    mask = sitk.ReadImage(str(out / "body" / f"{name}.mha"))
    for image in (sct, mask):  # the .mha outputs stay on the MR's grid
        assert image.GetSize() == mr.image.GetSize()
        np.testing.assert_allclose(image.GetDirection(), mr.image.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), mr.image.GetOrigin(), atol=1e-3)

    ct, datasets = assert_transverse_series(out / "dicom" / name, 1.0)
    np.testing.assert_allclose(ct.GetSpacing(), (1.0, 1.0, 1.0), atol=1e-6)
    source = pydicom.dcmread(next((mr_root / name).iterdir()), stop_before_pixels=True)
    for ds in datasets:
        for keyword in ("FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "PatientName"):
            assert ds[keyword].value == source[keyword].value, keyword
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    grid = entry["dicom_ct_grid"]
    assert grid["grid"] == "transverse" and grid["plane"] == "AXIAL"
    assert grid["size"] == list(ct.GetSize()) and grid["spacing_mm"] == [1.0, 1.0, 1.0]
    assert grid["slice_normal_angle_deg"] > TRANSVERSE_MAX_ANGLE_DEG and "from patient z" in grid["reason"]
    assert_covers_body(ct, mask, mr.image)
    measured = compare_hu(ct, sct, mask)
    if name in ("sagittal", "coronal"):  # lattice-aligned: half the CT slices are MR voxel centres
        assert measured["n_lattice"] > 10000 and measured["lattice_max_abs"] <= 1.0, measured
    print(name, measured)


def test_left_handed_sagittal_image_file(default_run: tuple[Path, Path, dict[str, dict]]) -> None:
    mr_root, out, entries = default_run
    assert entries["left_sagittal"]["error_messages"] == []
    mr = sitk.ReadImage(str(mr_root / "left_sagittal.mha"))
    sct = sitk.ReadImage(str(out / "left_sagittal.mha"))
    mask = sitk.ReadImage(str(out / "body" / "left_sagittal.mha"))
    np.testing.assert_allclose(sct.GetDirection(), mr.GetDirection(), atol=1e-9)  # still left-handed
    ct, datasets = assert_transverse_series(out / "dicom" / "left_sagittal", 1.0)
    assert datasets[0].BodyPartExamined == "HEAD" and str(datasets[0].PatientID).startswith("SYNTHCT-")
    assert entries["left_sagittal"]["dicom_ct_grid"]["grid"] == "transverse"
    assert_covers_body(ct, mask, mr)
    measured = compare_hu(ct, sct, mask)
    assert measured["n_lattice"] > 10000 and measured["lattice_max_abs"] <= 1.0, measured
    # the same anatomy as the right-handed sagittal MR: the same transverse CT
    right, _ = read_series(out / "dicom" / "sagittal")
    assert right.GetSize() == ct.GetSize()
    np.testing.assert_allclose(right.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(right), sitk.GetArrayFromImage(ct))


@pytest.mark.parametrize("name", ["axial", "tilted8"])
def test_transverse_mr_keeps_its_grid(default_run: tuple[Path, Path, dict[str, dict]], name: str) -> None:
    _, out, entries = default_run
    ct, datasets = read_series(out / "dicom" / name)
    sct = sitk.ReadImage(str(out / f"{name}.mha"))
    assert ct.GetSize() == sct.GetSize()
    np.testing.assert_allclose(ct.GetDirection(), sct.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(ct.GetOrigin(), sct.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(sct))  # voxel for voxel
    for ds in datasets:
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert float(ds.SliceThickness) == pytest.approx(MR_SPACING[2])
    grid = entries[name]["dicom_ct_grid"]
    assert grid["grid"] == "mr" and grid["plane"] == "AXIAL" and "transverse" in grid["reason"]
    assert grid["slice_normal_angle_deg"] == pytest.approx(0.0 if name == "axial" else 8.0, abs=1e-6)


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not on PATH: install Debian's dicom3tools (apt-get install dicom3tools)")
def test_dciodvfy_reports_no_error_on_transverse_series(default_run: tuple[Path, Path, dict[str, dict]]) -> None:
    _, out, _ = default_run
    files = sorted((out / "dicom" / "sagittal").iterdir())
    for path in [*files, *sorted((out / "dicom" / "left_sagittal").iterdir())[::20]]:
        assert dciodvfy_errors(path) == [], path


# ---------------------------------------------------------------- --ct-grid mr, --ct-slice-mm


def test_ct_grid_mr_keeps_the_sagittal_grid_with_honest_image_type(tmp_path: Path, package: Path) -> None:
    mr_root, out = tmp_path / "mr", tmp_path / "out"
    for name in ("sagittal", "coronal", "oblique45"):
        write_mr_series(make_mr(name), mr_root / name)
    assert predict("--mr", mr_root, "--model", package, "--out", out, "--dicom-out", "--no-qa", "--ct-grid",
                   "mr") == 0
    entries = {Path(e["inputs"][0]["filename"]).name: e for e in json.loads((out / "results.json").read_text())}
    for name, plane in (("sagittal", "SAGITTAL"), ("coronal", "CORONAL"), ("oblique45", "OBLIQUE")):
        ct, datasets = read_series(out / "dicom" / name)
        sct = sitk.ReadImage(str(out / f"{name}.mha"))
        assert ct.GetSize() == sct.GetSize()
        np.testing.assert_allclose(ct.GetDirection(), sct.GetDirection(), atol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(sct))
        for ds in datasets:
            assert list(ds.ImageType) == ["DERIVED", "SECONDARY", plane]
            assert float(ds.SliceThickness) == pytest.approx(MR_SPACING[2])
        grid = entries[name]["dicom_ct_grid"]
        assert grid["grid"] == "mr" and grid["plane"] == plane and "requested" in grid["reason"]
        if shutil.which("dciodvfy") is not None:  # a non-AXIAL value 3 is a warning (defined terms), no error
            assert dciodvfy_errors(sorted((out / "dicom" / name).iterdir())[0]) == []


def test_ct_slice_mm(tmp_path: Path, package: Path) -> None:
    mr_root, out = tmp_path / "mr", tmp_path / "out"
    write_mr_series(make_mr("sagittal"), mr_root / "sagittal")
    assert predict("--mr", mr_root / "sagittal", "--model", package, "--out", out, "--dicom-out", "--no-qa",
                   "--ct-slice-mm", "2") == 0
    ct, _ = assert_transverse_series(out / "dicom" / "sagittal", 2.0)
    np.testing.assert_allclose(ct.GetSpacing(), (1.0, 1.0, 2.0), atol=1e-6)
    entry = json.loads((out / "results.json").read_text())[0]
    assert entry["dicom_ct_grid"]["spacing_mm"] == [1.0, 1.0, 2.0]
    sct, mask = sitk.ReadImage(str(out / "sagittal.mha")), sitk.ReadImage(str(out / "body" / "sagittal.mha"))
    compare_hu(ct, sct, mask)
    assert predict("--mr", mr_root / "sagittal", "--model", package, "--out", tmp_path / "bad", "--dicom-out",
                   "--ct-slice-mm", "0") == 2


# ---------------------------------------------------------------- the core functions


def image_with(direction: np.ndarray, size: tuple[int, int, int] = (4, 5, 6)) -> sitk.Image:
    image = sitk.Image(size, sitk.sitkInt16)
    image.SetDirection(np.asarray(direction, float).ravel().tolist())
    return image


def test_transverse_angle_threshold_and_plane_names() -> None:
    for angle, transverse in ((0.0, True), (9.5, True), (10.5, False), (45.0, False), (90.0, False)):
        ok, measured = is_transverse(image_with(rotation((0.0, 1.0, 0.0), angle)))
        assert ok is transverse and measured == pytest.approx(angle, abs=1e-9)
    assert is_transverse(image_with(np.diag([1.0, 1.0, -1.0]))) == (True, 0.0)  # left-handed axial
    assert is_transverse(image_with(np.diag([-1.0, -1.0, 1.0])))[0]  # rotated 180° in-plane
    assert slice_plane(np.array([0.0, 0.0, -1.0])) == "AXIAL"
    assert slice_plane(np.array([-1.0, 0.0, 0.0])) == "SAGITTAL"
    assert slice_plane(np.array([0.0, 1.0, 0.0])) == "CORONAL"
    assert slice_plane(rotation((1.0, 0.0, 0.0), 30.0)[:, 2]) == "OBLIQUE"


def test_transverse_grid_margin_clip_and_air(tmp_path: Path) -> None:
    """A coronal 2 mm image with a small body: the grid is the body box + 10 mm, clipped to the field of view."""
    size = (60, 50, 40)  # x along patient x, y along -z, z along +y
    sct = sitk.GetImageFromArray(np.full(size[::-1], 100, np.int16))
    sct.SetSpacing((2.0, 2.0, 2.0))
    sct.SetDirection(CORONAL.ravel().tolist())
    sct.SetOrigin((-60.0, 10.0, 40.0))
    body = np.zeros(size[::-1], np.uint8)
    body[5:20, 0:10, 20:30] = 1  # touches the field of view's superior edge (array y = 0)
    mask = sitk.GetImageFromArray(body)
    mask.CopyInformation(sct)
    values = sitk.GetArrayFromImage(sct)
    values[body == 0] = AIR_HU
    sct = sitk.GetImageFromArray(values)
    sct.CopyInformation(mask)
    ct = transverse_grid(sct, mask)
    assert ct.GetPixelID() == sitk.sitkInt16 and ct.GetDirection() == tuple(np.eye(3).ravel())
    assert ct.GetSpacing() == (2.0, 2.0, 2.0)  # finest MR spacing 2 mm (above the 1 mm floor)
    low, high = body_box(mask)
    ct_low = np.asarray(ct.GetOrigin()) - 1.0
    ct_high = ct_low + 2.0 * np.asarray(ct.GetSize())
    np.testing.assert_allclose(ct_low[:2], low[:2] - MARGIN_MM, atol=1e-6)  # margin kept (on the MR's lattice)
    np.testing.assert_allclose(ct_high[:2], high[:2] + MARGIN_MM, atol=1e-6)
    np.testing.assert_allclose(ct_high[2], high[2], atol=1e-6)  # z: clipped at the field of view
    np.testing.assert_allclose(ct_low[2], low[2] - MARGIN_MM, atol=1e-6)
    hu = sitk.GetArrayFromImage(ct)
    assert set(np.unique(hu)) == {AIR_HU, 100}
    assert (hu == 100).sum() == body.sum()  # lattice-aligned: the body voxels themselves
    assert transverse_grid(sct, mask, slice_mm=5.0).GetSpacing() == (2.0, 2.0, 5.0)
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    whole = transverse_grid(sct, empty)  # no body: the whole field of view, all air
    assert whole.GetSize() == (60, 40, 50) and np.all(sitk.GetArrayViewFromImage(whole) == AIR_HU)


def test_dicom_ct_grid_record_and_write(tmp_path: Path) -> None:
    mr = make_mr("sagittal")
    sct = sitk.Cast(sitk.Clamp(mr, sitk.sitkFloat32, 0, 1000) - 500.0, sitk.sitkInt16)
    mask = sitk.Cast(mr > 100, sitk.sitkUInt8)
    chosen = dicom_ct_grid(sct, mask, "transverse", 1.5)
    record = chosen.record
    assert record["grid"] == "transverse" and record["spacing_mm"] == [1.0, 1.0, 1.5]
    assert record["slice_normal_angle_deg"] == pytest.approx(90.0)
    assert dicom_ct_grid(sct, mask, "mr").image is sct
    with pytest.raises(ValueError, match="CT grid"):
        dicom_ct_grid(sct, mask, "coronal")
    with pytest.raises(ValueError, match="positive"):
        transverse_grid(sct, mask, slice_mm=-1.0)
    files = write_ct_series(chosen.image, tmp_path / "ct", identity=None, model_name="m", model_sha256="0" * 64)
    assert len(files) == record["size"][2]
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert float(header.SliceThickness) == 1.5 and list(header.ImageType)[2] == "AXIAL"
