"""Phantom generator: determinism, anatomy, HU per tissue, MR/CT registration, bone/air ambiguity in MR, mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from synthct.cli import main as cli_main
from synthct.phantom import SIZES, PhantomVolumes, generate_case, generate_volumes, write_phantom_dataset
from synthct.phantom import tissues as T
from synthct.phantom.contrast import core, mr_overlap


@pytest.fixture(scope="module")
def brain() -> PhantomVolumes:
    return generate_volumes("brain", 11, "small")


@pytest.fixture(scope="module")
def pelvis() -> PhantomVolumes:
    return generate_volumes("pelvis", 11, "small")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_gives_identical_files_and_cases_do_not_depend_on_count(tmp_path: Path) -> None:
    first = write_phantom_dataset(tmp_path / "a", "brain", 2, seed=5, progress=False)
    again = write_phantom_dataset(tmp_path / "b", "brain", 1, seed=5, progress=False)
    assert [f.name for f in first] == ["1BA001", "1BA002"]
    assert _files(first[0]) == _files(again[0])
    assert _files(first[0])["mr.mha"] != _files(first[1])["mr.mha"]
    other = write_phantom_dataset(tmp_path / "c", "brain", 1, seed=6, progress=False)
    assert _files(other[0])["ct.mha"] != _files(first[0])["ct.mha"]


def test_different_seeds_give_different_anatomy(brain: PhantomVolumes) -> None:
    other = generate_volumes("brain", 12, "small")
    assert other.labels.shape == brain.labels.shape
    for label in (T.CORTICAL_BONE, T.WHITE_MATTER, T.CSF):
        a, b = brain.labels == label, other.labels == label
        dice = 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert dice < 0.8, (T.TISSUE_NAMES[label], dice)
    # Random per-case contrast: the grey/white MR ratio differs.
    ratios = [np.median(v.mr[v.labels == T.GREY_MATTER]) / np.median(v.mr[v.labels == T.WHITE_MATTER])
              for v in (brain, other)]
    assert abs(ratios[0] - ratios[1]) > 0.01


@pytest.mark.parametrize("region", ["brain", "pelvis"])
def test_images_types_and_geometry(region: str) -> None:
    mr, ct, mask = generate_case(region, 3, "small")
    assert mr.GetPixelID() == sitk.sitkInt16 and ct.GetPixelID() == sitk.sitkInt16
    assert mask.GetPixelID() == sitk.sitkUInt8
    spec = SIZES[region]["small"]
    for image in (mr, ct, mask):
        assert image.GetSize() == spec.shape[::-1]
        assert image.GetSpacing() == spec.spacing_mm[::-1]
        assert image.GetOrigin() == mr.GetOrigin() and image.GetDirection() == mr.GetDirection()
    assert sitk.GetArrayViewFromImage(mr).min() >= 0
    assert SIZES["brain"]["synthrad"].shape == (192, 256, 256)
    assert SIZES["pelvis"]["synthrad"].shape == (160, 512, 512)
    assert SIZES["pelvis"]["synthrad"].spacing_mm == (2.5, 1.0, 1.0)


_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _core(labels: np.ndarray, label: int, in_plane: bool = False) -> np.ndarray:
    """Voxels of ``label`` one voxel away from its boundary (3-D, or within the axial plane only: for thick
    slices, whose partial-volume blur along z is small)."""
    return ndimage.binary_erosion(labels == label, structure=_IN_PLANE if in_plane else None)


@pytest.mark.parametrize("region", ["brain", "pelvis"])
def test_hu_of_every_tissue_is_in_its_range(region: str, brain: PhantomVolumes, pelvis: PhantomVolumes) -> None:
    volumes = brain if region == "brain" else pelvis
    table = T.TISSUES[region]
    checked = []
    for label, tissue in table.items():
        if label == T.BACKGROUND:
            continue
        core = _core(volumes.labels, label, in_plane=region == "pelvis")
        if core.sum() < 30:
            continue
        hu = volumes.ct_hu[core].astype(np.float32)
        low, high = tissue.hu_range
        assert low <= np.median(hu) <= high, (T.TISSUE_NAMES[label], np.median(hu))
        inside = np.mean((hu >= low - 30) & (hu <= high + 30))
        assert inside > 0.9, (T.TISSUE_NAMES[label], inside)
        checked.append(T.TISSUE_NAMES[label])
    expected = {"brain": {"fat", "grey_matter", "white_matter", "csf", "cortical_bone", "cancellous_bone",
                          "internal_air", "eye"},
                "pelvis": {"skin", "fat", "muscle", "cortical_bone", "cancellous_bone", "urine", "bowel", "marrow"}}
    assert expected[region] <= set(checked), set(checked)


def test_brain_bone_values(brain: PhantomVolumes) -> None:
    cortical = brain.ct_hu[_core(brain.labels, T.CORTICAL_BONE)]
    diploe = brain.ct_hu[_core(brain.labels, T.CANCELLOUS_BONE)]
    assert 1200 <= np.median(cortical) <= 1900
    assert 300 <= np.median(diploe) <= 700


@pytest.mark.parametrize("region", ["brain", "pelvis"])
def test_mr_is_registered_to_ct(region: str, brain: PhantomVolumes, pelvis: PhantomVolumes) -> None:
    """Edges of MR and CT coincide: their gradient magnitudes correlate best without a shift, and both are
    strong on tissue boundaries of the label map."""
    volumes = brain if region == "brain" else pelvis
    mr = ndimage.gaussian_gradient_magnitude(volumes.mr.astype(np.float32), 0.5)
    ct = ndimage.gaussian_gradient_magnitude(np.clip(volumes.ct_hu, -200, 1500).astype(np.float32), 0.5)

    def correlation(shift: tuple[int, int, int]) -> float:
        shifted = np.roll(mr, shift, axis=(0, 1, 2))
        return float(np.corrcoef(shifted.ravel(), ct.ravel())[0, 1])

    aligned = correlation((0, 0, 0))
    assert aligned > 0.3
    for shift in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
        assert correlation(shift) < aligned - 0.02, shift  # a one-voxel misregistration is detectable
    boundary = ndimage.morphological_gradient(volumes.labels, size=3) > 0
    body = volumes.labels > 0
    assert mr[boundary & body].mean() > 2.0 * mr[~boundary & body].mean()


@pytest.mark.parametrize("region", ["brain", "pelvis"])
def test_bone_and_air_overlap_in_mr(region: str, brain: PhantomVolumes, pelvis: PhantomVolumes) -> None:
    """Away from partial-volume boundaries, cortical bone and air inside the body have the same dark MR (one noise
    floor per case): no MR threshold tells them apart, only anatomy can."""
    volumes = brain if region == "brain" else pelvis
    in_plane = region == "pelvis"
    overlap = mr_overlap(volumes.mr, volumes.labels, T.CORTICAL_BONE, T.INTERNAL_AIR, in_plane)
    assert overlap.n_first > 50 and overlap.n_second > 20, overlap
    # Measured on seed 11: brain 1.00 / 0.97, pelvis 0.92 / 0.84 (its gas core holds only 26 voxels); before the
    # shared noise floor 0.77 / 0.53 and 0.96 / 0.75 (bone was drawn 1.5x brighter than air on average).
    assert overlap.in_range >= 0.9, overlap
    assert overlap.inseparable >= (0.9 if region == "brain" else 0.75), overlap
    soft = np.median(volumes.mr[core(volumes.labels, T.MUSCLE)])
    bone = volumes.mr[core(volumes.labels, T.CORTICAL_BONE, in_plane)]
    air = volumes.mr[core(volumes.labels, T.INTERNAL_AIR, in_plane)]
    assert np.median(bone) < 0.15 * soft and np.median(air) < 0.15 * soft
    # ... while the CT tells them apart by more than 1000 HU.
    ct_gap = np.median(volumes.ct_hu[volumes.labels == T.CORTICAL_BONE]) - np.median(
        volumes.ct_hu[volumes.labels == T.INTERNAL_AIR])
    assert ct_gap > 1000


def test_signal_void_tissues_share_one_noise_floor_per_case() -> None:
    """Air, cortical bone and teeth take one MR draw per case; the other tissues' draws are those of an
    unchanged random stream (adding the shared floor did not reshuffle every other tissue's contrast)."""
    for region in ("brain", "pelvis", "th"):
        table = T.TISSUES[region]
        _, _, mr, _ = T.draw_table(table, np.random.default_rng(3))
        voids = [label for label, tissue in table.items() if tissue.mr_relative == T.SIGNAL_VOID]
        assert T.CORTICAL_BONE in voids and T.INTERNAL_AIR in voids
        assert len({float(mr[label]) for label in voids}) == 1, region
        assert 0.0 <= mr[T.CORTICAL_BONE] <= T.SIGNAL_VOID[1]
        replay = np.random.default_rng(3)
        for label in sorted(table):
            hu_draw = replay.uniform(*table[label].hu_mean)
            mr_draw = replay.uniform(*table[label].mr_relative)
            del hu_draw
            if label not in voids:
                assert mr[label] == np.float32(mr_draw), (region, T.TISSUE_NAMES[label])


def test_mr_overlap_measures_what_a_threshold_can_separate() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[:, :, 6:] = 1
    rng = np.random.default_rng(0)
    same = rng.normal(100.0, 10.0, labels.shape)
    overlap = mr_overlap(same, labels, 1, 0)
    assert overlap.in_range > 0.95 and overlap.inseparable > 0.8
    apart = same + 100.0 * labels
    overlap = mr_overlap(apart, labels, 1, 0)
    assert overlap.in_range < 0.01 and overlap.inseparable < 0.01
    assert overlap.n_first == overlap.n_second == 10 * 10 * 4  # cores: 26 neighbours of the same label
    with pytest.raises(ValueError, match="too few core voxels"):
        mr_overlap(same, np.zeros_like(labels), 1, 0)
    with pytest.raises(ValueError, match="shape"):
        mr_overlap(same[1:], labels, 1, 0)


@pytest.mark.parametrize("region", ["brain", "pelvis"])
def test_mask_and_background(region: str, brain: PhantomVolumes, pelvis: PhantomVolumes) -> None:
    volumes = brain if region == "brain" else pelvis
    mask = volumes.mask.astype(bool)
    body = volumes.labels > 0
    assert np.all(mask[body]), "the mask covers the whole body"
    spacing = volumes.spacing_xyz_mm[::-1]
    distance = ndimage.distance_transform_edt(~body, sampling=spacing)
    assert distance[mask].max() <= 5.0, "the mask is the body dilated by a few mm"
    assert distance[mask].max() >= 2.0
    outside = ~mask
    assert abs(float(np.mean(volumes.ct_hu[outside])) + 1000.0) < 15.0
    assert 1.0 < float(np.std(volumes.ct_hu[outside])) < 40.0, "air has noise"
    body_mr = float(np.median(volumes.mr[body & (volumes.labels != T.INTERNAL_AIR)]))
    assert float(np.mean(volumes.mr[outside])) < 0.1 * body_mr
    assert float(np.std(volumes.mr[outside])) > 0.0, "MR background is Rician noise"


def test_phantom_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["phantom", "--out", str(tmp_path), "--region", "pelvis", "--cases", "1", "--seed", "2",
                     "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "Task1" / "pelvis" / "1PA001").iterdir()) == [
        "ct.mha", "mask.mha", "mr.mha"]
    assert "wrote 1 pelvis case" in capsys.readouterr().out
    assert cli_main(["phantom", "--out", str(tmp_path), "--cases", "0", "--no-progress"]) == 2


def _synthetic_head_ct(path: Path) -> sitk.Image:
    """A small head-like CT: soft-tissue ellipsoid, skull shell, brain, an air sinus; 1 x 1 x 1.5 mm, origin set."""
    z, y, x = np.meshgrid(np.arange(40) * 1.5, np.arange(56), np.arange(48), indexing="ij")
    r = np.sqrt(((z - 30) / 26) ** 2 + ((y - 28) / 24) ** 2 + ((x - 24) / 20) ** 2)
    rng = np.random.default_rng(0)
    hu = np.full(r.shape, -1000.0) + rng.normal(0, 10, r.shape)
    hu[r < 1.0] = 45.0
    hu[r < 0.9] = 1500.0
    hu[r < 0.8] = 500.0
    hu[r < 0.75] = 1500.0
    hu[r < 0.7] = 35.0
    hu[(r < 0.5) & (np.abs(x - 24) < 3)] = 8.0
    hu[np.sqrt((z - 12) ** 2 + (y - 10) ** 2 + (x - 24) ** 2) < 5] = -990.0
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((1.0, 1.0, 1.5))
    image.SetOrigin((-20.0, 5.0, 100.0))
    sitk.WriteImage(image, str(path))
    return image


def test_from_ct_cases(tmp_path: Path) -> None:
    from synthct.phantom.from_ct import classify_ct, simulate_pair

    source = _synthetic_head_ct(tmp_path / "head.mha")
    args = ["phantom", "--from-ct", str(tmp_path / "head.mha"), "--region", "brain", "--cases", "2", "--seed", "4",
            "--no-progress"]
    assert cli_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "b")]) == 0
    folders = [tmp_path / "a" / "Task1" / "brain" / f"1BA00{k}" for k in (1, 2)]
    assert _files(folders[0]) == _files(tmp_path / "b" / "Task1" / "brain" / "1BA001")
    images = {name: sitk.ReadImage(str(folders[0] / f"{name}.mha")) for name in ("mr", "ct", "mask")}
    for image in images.values():
        assert image.GetSize() == source.GetSize() and image.GetSpacing() == source.GetSpacing()
        assert image.GetOrigin() == source.GetOrigin()
    ct_a = sitk.GetArrayFromImage(images["ct"])
    ct_b = sitk.GetArrayFromImage(sitk.ReadImage(str(folders[1] / "ct.mha")))
    assert np.mean(ct_a != ct_b) > 0.01, "each case has its own deformation"
    original = sitk.GetArrayFromImage(source).astype(np.float32)
    body_a, body_source = np.mean(ct_a > -300), np.mean(original > -300)
    assert abs(body_a - body_source) < 0.25 * body_source, "the deformation is a few mm (the volume is 6 cm wide)"
    assert np.corrcoef(ct_a.ravel(), original.ravel())[0, 1] > 0.6
    mr = sitk.GetArrayFromImage(images["mr"]).astype(np.float32)
    mask = sitk.GetArrayFromImage(images["mask"]) > 0
    assert np.all(mask[ct_a > -300])
    labels = classify_ct(ct_a.astype(np.float32), (1.5, 1.0, 1.0), "brain")
    bone = ndimage.binary_erosion(labels == T.CORTICAL_BONE, _IN_PLANE)
    brain_tissue = ndimage.binary_erosion(np.isin(labels, (T.WHITE_MATTER, T.GREY_MATTER)))
    assert bone.sum() > 50 and brain_tissue.sum() > 50
    assert np.median(mr[bone]) < 0.2 * np.median(mr[brain_tissue])
    assert np.median(mr[labels == T.CSF]) < 0.5 * np.median(mr[brain_tissue])
    # A deterministic function of (CT, region, seed).
    again = simulate_pair(original, (1.5, 1.0, 1.0), "brain", 9)
    np.testing.assert_array_equal(again[1], simulate_pair(original, (1.5, 1.0, 1.0), "brain", 9)[1])
    with pytest.raises(ValueError, match="region"):
        classify_ct(original, (1.5, 1.0, 1.0), "thorax")
