"""The preprocessed dataset cache: content, crop, and every kind of stale or corrupt cache detected and rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_helpers import HANG_GUARD_S, REPO, subprocess_env, write_tiny_dataset

from synthct.cache import (
    CacheError,
    CacheSettings,
    body_box,
    default_cache_dir,
    open_cache,
    prepare_cache,
    release_pages,
    settings_for_patch,
)
from synthct.dataset import find_cases, load_case
from synthct.intensity import mr_statistics, normalise_ct, normalise_mr, normalised_background

SETTINGS = settings_for_patch("brain", (64, 64, 64))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data", n_cases=3, shape=(72, 80, 76))


def _messages() -> tuple[list[str], object]:
    messages: list[str] = []
    return messages, messages.append


def test_cache_holds_the_normalised_cropped_case(dataset: Path) -> None:
    index = prepare_cache(dataset, settings_for_patch("brain", (64, 64, 64), "percentile", 99.0), workers=2,
                          progress=False)
    assert index.cache_dir == default_cache_dir(dataset, "brain")
    assert list(index.cases) == ["1BA001", "1BA002", "1BA003"]
    case = find_cases(dataset, region="brain")[1]
    volumes = load_case(case)
    cached = index.cases[case.case_id]
    entry = index.manifest["cases"][case.case_id]
    start, stop = entry["crop"]["start"], entry["crop"]["stop"]
    window = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    # the crop: the body box grown by half a patch, limited by the volume
    box_start, box_stop = body_box(volumes.mask)
    for axis in range(3):
        assert start[axis] == max(0, box_start[axis] - 32) and stop[axis] == min(volumes.mask.shape[axis],
                                                                                box_stop[axis] + 32)
    assert cached.shape == tuple(stop[a] - start[a] for a in range(3)) or min(cached.shape) >= 64
    # normalised with the requested rule on the whole volume, then cropped
    expected_mr = normalise_mr(volumes.mr, volumes.mask, "percentile", 99.0)[window]
    mr = cached.open("mr")
    assert isinstance(mr, np.memmap) and mr.dtype == np.float32
    np.testing.assert_allclose(mr, expected_mr, atol=1e-6)
    np.testing.assert_allclose(cached.open("ct"), normalise_ct(volumes.ct[window]), atol=1e-6)
    assert cached.open("ct_hu").dtype == np.int16  # integer HU kept losslessly in half the bytes
    np.testing.assert_array_equal(cached.open("ct_hu"), volumes.ct[window])
    np.testing.assert_array_equal(cached.open("mask"), volumes.mask[window])
    np.testing.assert_array_equal(cached.open("foreground"), np.flatnonzero(volumes.mask[window]))
    assert index.manifest["settings"]["mr_rule"] == "percentile" and index.manifest["settings"]["mr_percentile"] == 99
    assert index.manifest["synthct_version"]
    release_pages(mr)  # a no-op for the data: the array still reads the same
    np.testing.assert_allclose(mr, expected_mr, atol=1e-6)


def test_cache_records_the_rule_and_its_statistics(dataset: Path) -> None:
    index = prepare_cache(dataset, settings_for_patch("brain", (64, 64, 64), "zscore"), progress=False)
    assert index.manifest["settings"]["mr_rule"] == "zscore"
    case = find_cases(dataset, region="brain")[0]
    volumes = load_case(case)
    entry = index.manifest["cases"][case.case_id]
    inside = volumes.mr[volumes.mask > 0].astype(np.float64)
    assert (entry["mr_offset"], entry["mr_scale"]) == pytest.approx((inside.mean(), inside.std()))
    window = tuple(slice(a, b) for a, b in zip(entry["crop"]["start"], entry["crop"]["stop"], strict=True))
    np.testing.assert_allclose(index.cases[case.case_id].open("mr"),
                               normalise_mr(volumes.mr, volumes.mask, "zscore")[window], atol=1e-6)
    for other in ("max", "percentile"):  # a cache made with another rule is never used
        with pytest.raises(CacheError, match=f"mr_rule is 'zscore' in the cache, '{other}' wanted"):
            open_cache(dataset, settings_for_patch("brain", (64, 64, 64), other))  # type: ignore[arg-type]


def test_small_volumes_are_padded_to_a_patch_with_air(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=2, shape=(40, 56, 52))
    index = prepare_cache(data, SETTINGS, progress=False)
    cached = index.cases["1BA001"]
    assert cached.shape == (64, 64, 64) and cached.pad_before == (12, 4, 6)
    assert float(cached.open("mr")[0, 0, 0]) == -1.0 and int(cached.open("ct_hu")[0, 0, 0]) == -1024
    assert int(cached.open("mask")[0, 0, 0]) == 0
    assert cached.mr_background == index.manifest["cases"]["1BA001"]["mr_background"] == -1.0


def _padding(array: np.ndarray, pad_before: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """The voxels of ``array`` outside the source crop of ``shape`` placed at ``pad_before``."""
    outside = np.ones(array.shape, dtype=bool)
    outside[tuple(slice(p, p + n) for p, n in zip(pad_before, shape, strict=True))] = False
    return np.asarray(array)[outside]


def test_zscore_mr_is_padded_with_the_cases_normalised_zero(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=2, shape=(40, 56, 52))
    index = prepare_cache(data, settings_for_patch("brain", (64, 64, 64), "zscore"), progress=False)
    backgrounds = []
    for case in find_cases(data, region="brain"):
        volumes = load_case(case)
        inside = volumes.mr[volumes.mask > 0].astype(np.float64)
        cached = index.cases[case.case_id]
        entry = index.manifest["cases"][case.case_id]
        expected = normalised_background(mr_statistics(volumes.mr, volumes.mask, "zscore"))
        assert expected == pytest.approx(-inside.mean() / inside.std(), rel=1e-6) and expected < -1.2
        assert cached.mr_background == entry["mr_background"] == expected
        crop = tuple(b - a for a, b in zip(entry["crop"]["start"], entry["crop"]["stop"], strict=True))
        border = _padding(cached.open("mr"), cached.pad_before, crop)
        assert border.size > 0 and np.all(border == np.float32(expected))  # air as the network sees it, not -1
        assert np.all(_padding(cached.open("ct"), cached.pad_before, crop) == -1.0)
        backgrounds.append(expected)
    assert backgrounds[0] != backgrounds[1]  # per case


def _drop_backgrounds(cache_dir: Path) -> None:
    """Rewrite the manifest as a cache built before ``mr_background`` was recorded (checksum intact)."""
    from synthct.cache import _write_manifest, read_manifest

    manifest, _ = read_manifest(cache_dir)
    assert manifest is not None
    for entry in manifest["cases"].values():
        entry.pop("mr_background")
    _write_manifest(cache_dir, manifest)


@pytest.mark.parametrize("rule", ["max", "percentile", "zscore"])
def test_a_cache_without_mr_backgrounds_serves_max_and_percentile_only(tmp_path: Path, rule: str) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=2, shape=(40, 56, 52))
    settings = settings_for_patch("brain", (64, 64, 64), rule)  # type: ignore[arg-type]
    index = prepare_cache(data, settings, progress=False)
    _drop_backgrounds(index.cache_dir)
    if rule != "zscore":  # padded with -1, their background: still valid
        assert all(case.mr_background == -1.0 for case in open_cache(data, settings).cases.values())
        return
    with pytest.raises(CacheError, match="1BA001: MR padded with -1, not its normalised MR 0"):
        open_cache(data, settings)
    messages, report = _messages()
    rebuilt = prepare_cache(data, settings, progress=False, report=report)  # type: ignore[arg-type]
    assert len(messages) == 2 and all("rebuilding the case" in message for message in messages)
    assert all(case.mr_background < -1.2 for case in rebuilt.cases.values())
    open_cache(data, settings)


def test_an_up_to_date_cache_is_reused_untouched(dataset: Path) -> None:
    first = prepare_cache(dataset, SETTINGS, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in first.cache_dir.rglob("*.npy")}
    messages, report = _messages()
    prepare_cache(dataset, SETTINGS, progress=False, report=report)  # type: ignore[arg-type]
    assert messages == []
    assert {p: p.stat().st_mtime_ns for p in first.cache_dir.rglob("*.npy")} == stamps
    assert list(open_cache(dataset, SETTINGS).cases) == list(first.cases)
    # a cache built with a larger margin serves a run that needs less
    assert open_cache(dataset, settings_for_patch("brain", (32, 64, 64))).cases


def test_changed_source_is_detected_and_only_that_case_rebuilt(dataset: Path) -> None:
    index = prepare_cache(dataset, SETTINGS, progress=False)
    other = index.cases["1BA002"].folder / "mr.npy"
    other_stamp = other.stat().st_mtime_ns
    source = dataset / "Task1" / "brain" / "1BA001" / "ct.mha"
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    with pytest.raises(CacheError, match=r"1BA001: source .*ct.mha changed since the cache was built"):
        open_cache(dataset, SETTINGS)
    messages, report = _messages()
    prepare_cache(dataset, SETTINGS, progress=False, report=report)  # type: ignore[arg-type]
    assert len(messages) == 1 and "1BA001" in messages[0] and "rebuilding the case" in messages[0]
    assert other.stat().st_mtime_ns == other_stamp
    open_cache(dataset, SETTINGS)


def test_truncated_array_is_detected_and_rebuilt(dataset: Path) -> None:
    index = prepare_cache(dataset, SETTINGS, progress=False)
    path = index.cases["1BA003"].folder / "ct.npy"
    intact = path.read_bytes()
    path.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(CacheError, match=r"1BA003: .*ct.npy: \d+ bytes, \d+ written \(truncated or replaced\)"):
        open_cache(dataset, SETTINGS)
    messages, report = _messages()
    prepare_cache(dataset, SETTINGS, progress=False, report=report)  # type: ignore[arg-type]
    assert any("truncated" in m for m in messages)
    assert path.read_bytes() == intact
    # same size, other content: found by the sha256 check (--verify)
    corrupted = bytearray(intact)
    corrupted[-1] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    open_cache(dataset, SETTINGS)  # sizes and headers agree ...
    with pytest.raises(CacheError, match="content differs from the sha256"):
        open_cache(dataset, SETTINGS, verify_hashes=True)  # ... the content does not


def test_deleted_array_is_detected(dataset: Path) -> None:
    index = prepare_cache(dataset, SETTINGS, progress=False)
    (index.cases["1BA002"].folder / "mask.npy").unlink()
    with pytest.raises(CacheError, match=r"1BA002: .*mask.npy: missing"):
        open_cache(dataset, SETTINGS)
    prepare_cache(dataset, SETTINGS, progress=False, report=lambda _m: None)
    open_cache(dataset, SETTINGS)


def test_edited_manifest_is_detected_and_everything_rebuilt(dataset: Path) -> None:
    index = prepare_cache(dataset, SETTINGS, progress=False)
    path = index.cache_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["settings"]["mr_percentile"] = 50.0
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(CacheError, match="manifest was altered after it was written"):
        open_cache(dataset, SETTINGS)
    messages, report = _messages()
    prepare_cache(dataset, SETTINGS, progress=False, report=report)  # type: ignore[arg-type]
    assert len(messages) == 1 and "rebuilding every case" in messages[0]
    open_cache(dataset, SETTINGS)
    path.write_text("{ not json", encoding="utf-8")
    with pytest.raises(CacheError, match="not readable JSON"):
        open_cache(dataset, SETTINGS)


def test_other_settings_or_version_make_the_cache_stale(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_cache(dataset, SETTINGS, progress=False)
    with pytest.raises(CacheError, match="mr_rule is 'max' in the cache, 'percentile' wanted"):
        open_cache(dataset, settings_for_patch("brain", (64, 64, 64), "percentile"))
    with pytest.raises(CacheError, match="crop margin is 32 voxels in the cache, at least 48"):
        open_cache(dataset, settings_for_patch("brain", (96, 96, 96)))
    import synthct

    monkeypatch.setattr(synthct, "__version__", "99.0")
    with pytest.raises(CacheError, match=r"built by synthct '0\.1\.0'"):
        open_cache(dataset, SETTINGS)


def test_added_and_removed_cases_follow_the_dataset(dataset: Path) -> None:
    import shutil

    prepare_cache(dataset, SETTINGS, progress=False)
    shutil.rmtree(dataset / "Task1" / "brain" / "1BA002")
    index = prepare_cache(dataset, SETTINGS, progress=False)
    assert list(index.cases) == ["1BA001", "1BA003"]
    assert not (index.cache_dir / "cases" / "1BA002").exists()


def test_a_bad_case_is_reported_by_name(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=2)
    import SimpleITK as sitk

    mask_path = data / "Task1" / "brain" / "1BA002" / "mask.mha"
    mask = sitk.ReadImage(str(mask_path))
    sitk.WriteImage(mask * 0, str(mask_path))
    from synthct.dataset import DatasetError

    with pytest.raises(DatasetError, match=r"1BA002: .*mask.mha: body mask is empty"):
        prepare_cache(data, SETTINGS, progress=False)
    # the good case was kept: a second attempt after the fix builds only the bad one
    assert (default_cache_dir(data, "brain") / "cases" / "1BA001" / "mr.npy").is_file()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="MR rule"):
        CacheSettings("brain", mr_rule="mean").check()
    with pytest.raises(ValueError, match="unknown region"):
        CacheSettings("knee").check()


def test_prepare_command(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=2)
    out = tmp_path / "cache"
    command = [sys.executable, "-m", "synthct", "data", "prepare", str(data), "--region", "brain", "--out", str(out),
               "--workers", "2", "--mr-rule", "percentile", "--mr-percentile", "99"]
    done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, encoding="utf-8",
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    assert "2 case(s) of region brain, up to date" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["mr_rule"] == "percentile"
    assert not [p for p in out.rglob(".*") if p.name != ".lock"]  # no temporary files left behind
    bad = subprocess.run([*command[:5], str(tmp_path / "nowhere"), *command[6:]], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S)
    assert bad.returncode == 1 and "not a folder" in bad.stderr


def test_cache_brings_every_case_to_the_canonical_orientation(tmp_path: Path) -> None:
    """A case stored sagittally and flipped is cached exactly as its axial original (no interpolation)."""
    import SimpleITK as sitk

    data = write_tiny_dataset(tmp_path / "data", n_cases=2, shape=(40, 56, 52))
    axial, stored = data / "Task1" / "brain" / "1BA001", data / "Task1" / "brain" / "1BA002"
    for name in ("mr", "ct", "mask"):
        image = sitk.ReadImage(str(axial / f"{name}.mha"))
        image.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(image, str(axial / f"{name}.mha"))
        sitk.WriteImage(sitk.Flip(sitk.PermuteAxes(image, (1, 2, 0)), (False, True, True)), str(stored / f"{name}.mha"))
    index = prepare_cache(data, SETTINGS, progress=False)
    entries = index.manifest["cases"]
    assert entries["1BA001"]["source_orientation"] == "LPS"
    assert entries["1BA002"]["source_orientation"] == "PIR"
    assert entries["1BA001"]["spacing_mm"] == entries["1BA002"]["spacing_mm"] == [2.0, 1.0, 1.0]  # (z, y, x)
    assert index.manifest["settings"]["orientation"] == "LPS"
    assert index.manifest["geometry"] == {"orientation": "LPS", "spacing_zyx_mm": [2.0, 1.0, 1.0],
                                          "spacing_tolerance": 0.15}
    for name in ("mr", "ct", "ct_hu", "mask", "foreground"):
        np.testing.assert_array_equal(index.cases["1BA001"].open(name), index.cases["1BA002"].open(name))


def test_prepare_removes_temporaries_of_an_interrupted_build(dataset: Path) -> None:
    """A build killed while writing leaves ``.synthct-tmp-*`` files; the next build (under the lock) removes them."""
    index = prepare_cache(dataset, SETTINGS, progress=False)
    case_dir = index.cases["1BA001"].folder
    leftovers = [case_dir / ".synthct-tmp-mr.npy.x1y2.npy", index.cache_dir / ".synthct-tmp-manifest.json.a1.json"]
    for path in leftovers:
        path.write_bytes(b"half")
    keep = case_dir / ".user-note"
    keep.write_text("mine", encoding="utf-8")
    prepare_cache(dataset, SETTINGS, progress=False)
    assert not any(path.exists() for path in leftovers) and keep.exists()
