"""Patch sampling and augmentation (train/data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthct.train.config import config_from_dict
from synthct.train.data import (
    PatchDataset,
    PatchSpec,
    crop,
    draw_epoch_specs,
    extract_crop,
    extract_patch,
    prepare_train_volume,
    window_around,
)

from synthct.dataset import CaseVolumes
from synthct.intensity import mr_statistics, normalise_ct, normalised_background
from synthct.sliding_window import pad_to_shape


def _case(shape: tuple[int, int, int], seed: int = 0, case_id: str = "1BA001") -> CaseVolumes:
    """A small body: an off-centre ellipsoid mask (so that foreground and background sampling differ)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    radius = ((z - shape[0] * 0.3) / (0.25 * shape[0])) ** 2 + ((y - shape[1] * 0.35) / (0.2 * shape[1])) ** 2
    radius += ((x - shape[2] * 0.6) / (0.2 * shape[2])) ** 2
    mask = (radius < 1).astype(np.uint8)
    ct = np.where(mask > 0, 40.0 + rng.normal(0, 20, shape), -1000.0).astype(np.float32)
    mr = np.where(mask > 0, 200.0 + rng.normal(0, 10, shape), 0.0).astype(np.float32)
    return CaseVolumes(case_id, mr, ct, mask, None, (1.0, 1.0, 1.0))  # type: ignore[arg-type]


def _config(**data: object) -> object:
    return config_from_dict({"data": {"patch_size": [64, 64, 64], **data}})


def test_pad_to_patch_pads_small_axes_only() -> None:
    array = np.zeros((40, 70, 64), dtype=np.float32)
    padded = pad_to_shape(array, (64, 64, 64), -1.0)
    assert padded.shape == (64, 70, 64)
    assert padded[0, 0, 0] == -1.0 and padded[11, 0, 0] == -1.0 and padded[12, 0, 0] == 0.0 and padded[52, 0, 0] == -1.0


def test_prepare_volume_normalises_and_pads() -> None:
    case = _case((50, 80, 72))
    volume = prepare_train_volume(case, _config())
    assert volume.mr.shape == volume.ct.shape == volume.mask.shape == (64, 80, 72)
    assert volume.mr.dtype == np.float32 and volume.mr.min() >= -1.0 and volume.mr.max() <= 1.0
    assert volume.ct[7:57].max() == pytest.approx(float(normalise_ct(case.ct).max()))
    assert volume.ct[0].max() == -1.0  # padding is air
    assert volume.foreground.size == int(case.mask.sum())


@pytest.mark.parametrize("rule", ["max", "zscore"])
def test_mr_padding_and_crops_outside_are_the_cases_normalised_zero(rule: str) -> None:
    case = _case((50, 80, 72))
    config = _config(mr_normalisation=rule)
    volume = prepare_train_volume(case, config)
    expected = normalised_background(mr_statistics(case.mr, case.mask, rule))  # type: ignore[arg-type]
    assert expected == -1.0 if rule == "max" else expected < -5.0  # MR 0 is -mean/std of the body for zscore
    assert volume.mr_background == expected
    assert np.all(volume.mr[:7] == np.float32(expected)) and np.all(volume.mr[57:] == np.float32(expected))
    assert np.all(volume.ct[:7] == -1.0)  # the CT's air is -1 whatever the MR rule
    # a crop starting at the volume's corner extends 16 voxels (a quarter patch) outside it on each axis
    corner = PatchSpec(0, (0, 0, 0), (0, 0, 0), False, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    crops = extract_crop(volume, corner, (64, 64, 64))
    assert crops["mr"].shape == (1, 96, 96, 96)
    outside = np.float32(expected)
    assert np.all(crops["mr"][0, :16] == outside) and np.all(crops["mr"][0, :, :16] == outside)
    assert np.all(crops["ct"][0, :16] == -1.0)
    # an augmented patch translated past the border samples those voxels (output → input: z - 8)
    shifted = PatchSpec(0, (0, 0, 0), (0, 0, 0), False, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (-8.0, 0.0, 0.0))
    patch = extract_patch(volume, shifted, (64, 64, 64))
    np.testing.assert_allclose(patch["mr"][0, :8], expected, rtol=1e-6)
    assert not np.allclose(patch["mr"][0], expected)  # the body is in the patch too


def test_window_around_stays_inside() -> None:
    assert window_around((0, 5, 99), (64, 80, 100), (64, 64, 64)) == (0, 0, 36)
    assert window_around((40, 40, 50), (64, 80, 100), (64, 64, 64)) == (0, 8, 18)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 1.0])
def test_sampler_windows_inside_and_foreground_fraction(fraction: float) -> None:
    config = _config(foreground_fraction=fraction)
    volumes = [prepare_train_volume(_case((70, 96, 90), seed=s, case_id=f"1BA00{s}"), config) for s in range(3)]
    specs = draw_epoch_specs(volumes, 600, config, seed=3, rank=0, epoch=0)
    assert len(specs) == 600
    for spec in specs:
        shape = volumes[spec.volume].mask.shape
        for start, size in zip(spec.start, shape, strict=True):
            assert 0 <= start <= size - 64
        for start, centre in zip(spec.start, spec.centre, strict=True):  # the window holds its centre
            assert start <= centre < start + 64
        if spec.from_foreground:
            assert volumes[spec.volume].mask[spec.centre] == 1
    drawn = np.mean([s.from_foreground for s in specs])
    assert drawn == pytest.approx(fraction, abs=0.06)
    in_mask = np.mean([volumes[s.volume].mask[s.centre] for s in specs])
    assert in_mask >= drawn  # background draws may land in the body too
    # every volume is used equally (shuffled round-robin)
    assert sorted(np.bincount([s.volume for s in specs]).tolist()) == [200, 200, 200]


def test_sampler_is_deterministic_per_seed_rank_epoch() -> None:
    config = _config()
    volumes = [prepare_train_volume(_case((64, 64, 80)), config)]
    first = draw_epoch_specs(volumes, 20, config, seed=1, rank=0, epoch=4)
    assert first == draw_epoch_specs(volumes, 20, config, seed=1, rank=0, epoch=4)
    assert first != draw_epoch_specs(volumes, 20, config, seed=1, rank=1, epoch=4)
    assert first != draw_epoch_specs(volumes, 20, config, seed=1, rank=0, epoch=5)


def test_crop_fills_outside() -> None:
    array = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = crop(array, (-1, 1, 2), (3, 3, 3), -5.0)
    assert out.shape == (3, 3, 3)
    assert out[0].max() == -5.0
    assert out[1, 0, 0] == array[0, 1, 2]
    assert out[1, 2, 0] == -5.0


def test_patches_unaugmented_and_augmented() -> None:
    config = _config(augment={"enabled": True, "probability": 1.0, "rotate_degrees": 15.0})
    volume = prepare_train_volume(_case((64, 90, 80)), config)
    specs = draw_epoch_specs([volume], 4, config, seed=0, rank=0, epoch=0)
    assert all(spec.rotate is not None for spec in specs)
    plain = type(specs[0])(specs[0].volume, specs[0].start, specs[0].centre, specs[0].from_foreground)
    raw = extract_patch(volume, plain, (64, 64, 64))
    window = tuple(slice(s, s + 64) for s in plain.start)
    assert np.array_equal(raw["ct"][0], volume.ct[window])
    dataset = PatchDataset([volume], specs, (64, 64, 64))
    item = dataset[0]
    for key in ("mr", "ct", "mask"):
        assert tuple(item[key].shape) == (1, 64, 64, 64)
    assert set(np.unique(item["mask"].numpy())) <= {0.0, 1.0}
    assert item["ct"].min() >= -1.0 - 1e-6 and item["ct"].max() <= 1.0 + 1e-6
    # the same affine moves MR, CT and mask together: body voxels of the mask carry body CT values
    body_ct = item["ct"][item["mask"] > 0]
    assert body_ct.numel() > 0 and float(body_ct.median()) > -0.6
    augmented = extract_patch(volume, specs[0], (64, 64, 64))
    assert not np.array_equal(augmented["ct"], extract_patch(volume, plain, (64, 64, 64))["ct"])


def test_loader_with_workers_gives_the_same_batches() -> None:
    from synthct.train.data import make_loader

    config = config_from_dict({"data": {"augment": {"probability": 1.0}}, "train": {"batch_size": 2}})
    volumes = [prepare_train_volume(_case((64, 70, 66)), config)]
    specs = draw_epoch_specs(volumes, 4, config, seed=0, rank=0, epoch=0)
    plain = list(make_loader(volumes, specs, config, seed=0))
    config.data.num_workers = 1
    with_worker = list(make_loader(volumes, specs, config, seed=0))
    assert len(plain) == len(with_worker) == 2
    for a, b in zip(plain, with_worker, strict=True):
        for key in ("mr", "ct", "mask"):
            assert a[key].shape == (2, 1, 64, 64, 64)
            assert torch.equal(a[key], b[key])


def _mapped_volumes(tmp_path, n_cases: int = 3, rule: str = "max", shape=(70, 72, 68)):  # type: ignore[no-untyped-def]
    from synthct.train.data import mapped_train_volume
    from train_helpers import write_tiny_dataset

    from synthct.cache import prepare_cache, settings_for_patch

    data = write_tiny_dataset(tmp_path / "data", n_cases=n_cases, shape=shape)
    index = prepare_cache(data, settings_for_patch("brain", (64, 64, 64), rule), progress=False)  # type: ignore[arg-type]
    return [mapped_train_volume(case) for case in index.cases.values()]


def test_cached_zscore_volumes_pad_crops_with_the_cached_background(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pickle

    from synthct.train.data import mapped_validation_volume

    from synthct.cache import LEGACY_MR_BACKGROUND

    volumes = _mapped_volumes(tmp_path, n_cases=2, rule="zscore", shape=(40, 56, 52))
    for volume in volumes:
        assert volume.source is not None
        background = volume.source.mr_background
        assert background < -1.2 and background != LEGACY_MR_BACKGROUND
        assert volume.mr_background == background == pickle.loads(pickle.dumps(volume)).mr_background
        assert mapped_validation_volume(volume.source).mr_background == background
        assert float(volume.mr[0, 0, 0]) == np.float32(background)  # the cache padded the 40-voxel z axis with it
        corner = PatchSpec(0, (0, 0, 0), (0, 0, 0), False)
        crops = extract_crop(volume, corner, (64, 64, 64))
        assert np.all(crops["mr"][0, :16] == np.float32(background))
    assert volumes[0].mr_background != volumes[1].mr_background


def test_cached_volumes_are_memory_maps_and_pickle_as_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pickle

    volumes = _mapped_volumes(tmp_path, n_cases=2)
    volume = volumes[0]
    for array in (volume.mr, volume.ct, volume.mask, volume.foreground):
        assert isinstance(array, np.memmap)  # nothing of the case is held in this process's memory
    payload = pickle.dumps(volume)
    assert len(payload) < 2000  # the path, not the voxels
    again = pickle.loads(payload)
    assert isinstance(again.mr, np.memmap) and np.array_equal(again.ct, volume.ct)
    volume.release()
    assert np.array_equal(again.ct, volume.ct)


@pytest.mark.parametrize("workers", [0, 1])
def test_one_loader_for_the_run_gives_each_epochs_patches(tmp_path, workers: int) -> None:  # type: ignore[no-untyped-def]
    """The persistent loader yields, epoch after epoch, exactly the per-epoch draw; resuming mid-epoch skips the
    batches already used."""
    from synthct.train.data import make_epoch_loader, make_loader

    volumes = _mapped_volumes(tmp_path)
    config = config_from_dict({"data": {"augment": {"probability": 0.5}, "num_workers": workers,
                                        "prefetch_factor": 2},
                               "train": {"batch_size": 2, "epochs": 3}})
    per_epoch = 2
    loader = make_epoch_loader(volumes, config, seed=7, rank=1, start_epoch=0, start_step=0, steps_per_epoch=per_epoch)
    batches = list(loader)
    assert len(batches) == len(loader) == 3 * per_epoch
    config.data.num_workers = 0
    for epoch in range(3):
        specs = draw_epoch_specs(volumes, per_epoch * 2, config, seed=7, rank=1, epoch=epoch)
        expected = list(make_loader(volumes, specs, config, seed=0))
        for got, want in zip(batches[epoch * per_epoch:(epoch + 1) * per_epoch], expected, strict=True):
            for key in ("mr", "ct", "mask"):
                assert torch.equal(got[key], want[key]), (epoch, key)
    resumed = list(make_epoch_loader(volumes, config, seed=7, rank=1, start_epoch=1, start_step=1,
                                     steps_per_epoch=per_epoch))
    assert len(resumed) == 3
    for got, want in zip(resumed, batches[3:], strict=True):
        assert torch.equal(got["ct"], want["ct"])


def test_device_augmentation_matches_the_loaders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Batched grid_sample on the device = MONAI Affined in the loader (same transform for MR, CT and mask,
    nearest for the mask); unaugmented patches come through exactly."""
    from synthct.train.augment import apply_batch_affine
    from synthct.train.data import EpochPatchDataset

    volumes = _mapped_volumes(tmp_path, n_cases=2)
    config = config_from_dict({"data": {"augment": {"probability": 0.5, "rotate_degrees": 15.0}},
                               "train": {"batch_size": 4}})
    loader_side = EpochPatchDataset(volumes, config, seed=3, rank=0, patches_per_epoch=8)
    device_side = EpochPatchDataset(volumes, config, seed=3, rank=0, patches_per_epoch=8, crops=True)
    keys = [(0, i) for i in range(8)]
    crops = torch.utils.data.default_collate([device_side[k] for k in keys])
    assert crops["augmented"].any() and not crops["augmented"].all()
    got = apply_batch_affine(crops, config.data.patch_size)
    want = torch.utils.data.default_collate([loader_side[k] for k in keys])
    for key in ("mr", "ct"):
        assert got[key].shape == (8, 1, 64, 64, 64)
        assert float((got[key] - want[key]).abs().max()) < 1e-4, key
    plain = ~crops["augmented"]
    for key in ("mr", "ct", "mask"):
        assert torch.equal(got[key][plain], want[key][plain])
    assert set(torch.unique(got["mask"]).tolist()) <= {0.0, 1.0}
    assert float((got["mask"] != want["mask"]).float().mean()) < 1e-3  # nearest: ties may round apart
