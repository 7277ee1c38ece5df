"""Training data: volumes memory-mapped from the dataset cache (synthct.cache), random patches, rotation + affine
augmentation (in the loader with MONAI ``Affined``, or batched on the device: train.augment).

Arrays are (z, y, x). A run reads patches straight from the cache's ``.npy`` memory maps, so a rank holds only the
pages it touches (shared with every other rank and worker through the page cache), whatever the number of cases;
:class:`EpochPatchDataset` and :class:`EpochBatchSampler` feed one data loader for the whole run, so its workers
live across epochs. Patches are drawn by :func:`draw_epoch_specs`, a pure function of (seed, rank, epoch): a
resumed run redraws the epoch it stopped in and skips the patches already used, so sampling continues exactly
where it stopped, with any number of data-loader workers. Each patch's window lies inside the (padded) volume;
``foreground_fraction`` of them are centred on a body-mask voxel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from monai.data import set_track_meta
from monai.transforms import Affined
from synthct.train.augment import AUGMENT_MARGIN, affine_matrix, crop_margin  # noqa: F401 (AUGMENT_MARGIN: re-exported)
from synthct.train.config import AugmentConfig, Config

from synthct.cache import MAX_FOREGROUND_INDICES, CachedCase, release_pages
from synthct.dataset import CaseVolumes
from synthct.intensity import apply_mr_statistics, mr_statistics, normalise_ct, normalised_background
from synthct.sliding_window import pad_to_shape

Shape3 = tuple[int, int, int]
T = TypeVar("T")
WORKER_START = "forkserver"
"""How loader workers start: from a clean server process, not by forking this one (a fork of a process holding
other runtimes' thread pools crashed in the full test suite); cached volumes pickle as memory-map paths."""
RELEASE_EVERY_PATCHES = 32
"""A loader process drops its resident memory-map pages after this many patches (they stay in the page cache)."""


@dataclass
class TrainVolume:
    """One training case: normalised MR and CT in [-1, 1] (float32), mask uint8, all at least one patch large;
    ``foreground`` holds flat indices of body-mask voxels; ``mr_background`` is the case's normalised MR 0
    (:func:`synthct.intensity.normalised_background`), what the MR is padded with. Memory maps when ``source`` (the
    cached case) is set: then a pickled volume travels as its cache path, not its voxels."""

    case_id: str
    mr: np.ndarray
    ct: np.ndarray
    mask: np.ndarray
    foreground: np.ndarray
    mr_background: float
    source: CachedCase | None = None

    def __getstate__(self) -> dict[str, Any]:
        if self.source is None:
            return dict(self.__dict__)
        return {"case_id": self.case_id, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "mr" in state:
            self.__dict__.update(state)
        else:
            self.__dict__.update(mapped_train_volume(state["source"]).__dict__)

    def release(self) -> None:
        """Drop this process's resident pages of the memory maps (no-op for in-memory arrays)."""
        for array in (self.mr, self.ct, self.mask, self.foreground):
            release_pages(array)


@dataclass
class ValidationVolume:
    """One validation case: normalised MR (float32), CT in HU, mask uint8 (memory maps when from the cache) and
    the case's normalised MR 0 (``mr_background``: the MR's padding value)."""

    case_id: str
    mr: np.ndarray
    ct_hu: np.ndarray
    mask: np.ndarray
    mr_background: float

    def release(self) -> None:
        """Drop this process's resident pages of the memory maps (no-op for in-memory arrays)."""
        for array in (self.mr, self.ct_hu, self.mask):
            release_pages(array)


def mapped_train_volume(cached: CachedCase) -> TrainVolume:
    """A training volume reading the cached case's memory maps (nothing is loaded)."""
    return TrainVolume(cached.case_id, cached.open("mr"), cached.open("ct"), cached.open("mask"),
                       cached.open("foreground"), cached.mr_background, cached)


def mapped_validation_volume(cached: CachedCase) -> ValidationVolume:
    """A validation volume reading the cached case's memory maps (cropped to the body + margin, as cached)."""
    return ValidationVolume(cached.case_id, cached.open("mr"), cached.open("ct_hu"), cached.open("mask"),
                            cached.mr_background)


@dataclass(frozen=True)
class PatchSpec:
    """One training patch: volume index, window start (z, y, x) and the centre it was drawn around; the affine
    parameters (rotation in radians, scale factors, translation in voxels) or None for no augmentation."""

    volume: int
    start: Shape3
    centre: Shape3
    from_foreground: bool
    rotate: tuple[float, float, float] | None = None
    scale: tuple[float, float, float] | None = None
    translate: tuple[float, float, float] | None = None


def normalised_mr(case: CaseVolumes, config: Config) -> tuple[np.ndarray, float]:
    """The case's MR normalised with the configured rule (synthct.intensity.normalise_mr) and its normalised MR 0
    (:func:`synthct.intensity.normalised_background`)."""
    rule = config.data.mr_normalisation
    statistics = mr_statistics(case.mr, case.mask, rule.rule, rule.percentile)
    return apply_mr_statistics(case.mr, statistics), normalised_background(statistics)


def prepare_train_volume(case: CaseVolumes, config: Config) -> TrainVolume:
    """Normalise, pad to a patch (MR with its normalised MR 0, CT with -1 = air, mask with 0) and index the body
    mask."""
    if case.ct is None:
        raise ValueError(f"{case.case_id}: training needs a CT")
    patch = config.data.patch_size
    normalised, background = normalised_mr(case, config)
    mr = pad_to_shape(normalised, patch, background)
    ct = pad_to_shape(normalise_ct(case.ct), patch, -1.0)
    mask = pad_to_shape(case.mask.astype(np.uint8, copy=False), patch, 0)
    foreground = np.flatnonzero(mask)
    if foreground.size > MAX_FOREGROUND_INDICES:
        foreground = foreground[:: math.ceil(foreground.size / MAX_FOREGROUND_INDICES)]
    return TrainVolume(case.case_id, mr, ct, mask, foreground.astype(np.int64), background)


def prepare_validation_volume(case: CaseVolumes, config: Config) -> ValidationVolume:
    """Normalised MR and the CT kept in HU (metrics are computed in HU)."""
    if case.ct is None:
        raise ValueError(f"{case.case_id}: validation needs a CT")
    normalised, background = normalised_mr(case, config)
    return ValidationVolume(case.case_id, normalised, case.ct.astype(np.float32, copy=False),
                            case.mask.astype(np.uint8, copy=False), background)


def window_around(centre: Sequence[int], shape: Sequence[int], patch_size: Sequence[int]) -> Shape3:
    """Start of the patch centred on ``centre``, shifted to lie inside ``shape`` (shape ≥ patch on every axis)."""
    start = []
    for c, size, patch in zip(centre, shape, patch_size, strict=True):
        start.append(int(min(max(int(c) - patch // 2, 0), size - patch)))
    z, y, x = start
    return z, y, x


def _augment_parameters(rng: np.random.Generator, augment: AugmentConfig) -> tuple[
        tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]] | None:
    if not augment.enabled or rng.random() >= augment.probability:
        return None
    limit = math.radians(augment.rotate_degrees)
    rotate = _triple(float(v) for v in rng.uniform(-limit, limit, 3))
    scale = _triple(float(v) for v in 1.0 + rng.uniform(-augment.scale, augment.scale, 3))
    translate = _triple(float(v) for v in rng.uniform(-augment.translate_voxels, augment.translate_voxels, 3))
    return rotate, scale, translate


def _triple(values: Iterable[T]) -> tuple[T, T, T]:
    """Exactly three ``values`` as a tuple (z, y, x); raises ``ValueError`` for any other count."""
    z, y, x = values
    return z, y, x


def draw_epoch_specs(volumes: Sequence[TrainVolume], count: int, config: Config, seed: int, rank: int,
                     epoch: int) -> list[PatchSpec]:
    """``count`` patch specs for one rank and epoch: volumes in a shuffled round-robin, centres in the body mask
    with probability ``data.foreground_fraction`` (else anywhere), augmentation per ``data.augment``.

    Deterministic in (seed, rank, epoch, volumes, config).
    """
    if not volumes:
        raise ValueError("no training volumes")
    rng = np.random.default_rng([seed, rank, epoch])
    patch = config.data.patch_size
    order = np.concatenate([rng.permutation(len(volumes)) for _ in range(math.ceil(count / len(volumes)))])
    specs = []
    for index in order[:count]:
        volume = volumes[int(index)]
        shape = volume.mask.shape
        from_foreground = bool(rng.random() < config.data.foreground_fraction) and volume.foreground.size > 0
        if from_foreground:
            flat = int(volume.foreground[rng.integers(volume.foreground.size)])
            centre = _triple(int(v) for v in np.unravel_index(flat, shape))
        else:
            centre = _triple(int(rng.integers(0, size)) for size in shape)
        augment = _augment_parameters(rng, config.data.augment)
        rotate, scale, translate = augment if augment is not None else (None, None, None)
        specs.append(PatchSpec(int(index), window_around(centre, shape, patch), centre,
                               from_foreground, rotate, scale, translate))
    return specs


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], value: float) -> np.ndarray:
    """``array[start : start + size]`` on each axis; parts outside the array are filled with ``value``."""
    out = np.full(tuple(int(s) for s in size), value, dtype=array.dtype)
    source, target = [], []
    for s, n, dim in zip(start, size, array.shape, strict=True):
        lo, hi = max(int(s), 0), min(int(s) + int(n), dim)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - int(s), hi - int(s)))
    out[tuple(target)] = array[tuple(source)]
    return out


def extract_patch(volume: TrainVolume, spec: PatchSpec, patch_size: Sequence[int]) -> dict[str, np.ndarray]:
    """The patch of ``spec``: ``{"mr", "ct", "mask"}`` arrays (1, pz, py, px) float32 (mask 0/1).

    With augmentation, a larger crop around the window's centre is rotated/scaled/translated (MONAI ``Affined``;
    bilinear for MR and CT, nearest for the mask, same parameters for all three) and resampled to the patch size.
    """
    patch = tuple(int(p) for p in patch_size)
    if spec.rotate is None:
        window = tuple(slice(s, s + p) for s, p in zip(spec.start, patch, strict=True))
        return {
            "mr": volume.mr[window][None].astype(np.float32, copy=True),
            "ct": volume.ct[window][None].astype(np.float32, copy=True),
            "mask": volume.mask[window][None].astype(np.float32),
        }
    margin = crop_margin(patch)
    big = [p + 2 * m for p, m in zip(patch, margin, strict=True)]
    start = [s - m for s, m in zip(spec.start, margin, strict=True)]
    data = {
        "mr": crop(volume.mr, start, big, volume.mr_background)[None],
        "ct": crop(volume.ct, start, big, -1.0)[None],
        "mask": crop(volume.mask, start, big, 0).astype(np.float32)[None],
    }
    set_track_meta(False)
    transform = Affined(
        keys=("mr", "ct", "mask"),
        rotate_params=spec.rotate,
        scale_params=spec.scale,
        translate_params=spec.translate,
        spatial_size=patch,
        mode=("bilinear", "bilinear", "nearest"),
        padding_mode="border",
    )
    out = transform(data)
    return {key: np.asarray(torch.as_tensor(out[key]).numpy(), dtype=np.float32) for key in ("mr", "ct", "mask")}


def _spec_affine(spec: PatchSpec) -> np.ndarray:
    """The patch's affine (4, 4): identity without augmentation (rotation, scale and translation come together)."""
    if spec.rotate is None:
        return np.eye(4)
    if spec.scale is None or spec.translate is None:
        raise ValueError(f"patch spec {spec!r}: rotation without scale or translation")
    return affine_matrix(spec.rotate, spec.scale, spec.translate)


def extract_crop(volume: TrainVolume, spec: PatchSpec, patch_size: Sequence[int]) -> dict[str, np.ndarray]:
    """For augmentation on the device (train.augment.apply_batch_affine): the crop around the patch, larger by
    ``AUGMENT_MARGIN`` of the patch on each side (``mr``, ``ct``, ``mask``: (1, *crop) float32), the patch's
    affine (4, 4) and whether it is augmented."""
    patch = tuple(int(p) for p in patch_size)
    margin = crop_margin(patch)
    big = [p + 2 * m for p, m in zip(patch, margin, strict=True)]
    start = [s - m for s, m in zip(spec.start, margin, strict=True)]
    augmented = spec.rotate is not None
    affine = _spec_affine(spec)
    return {
        "mr": crop(volume.mr, start, big, volume.mr_background)[None].astype(np.float32, copy=False),
        "ct": crop(volume.ct, start, big, -1.0)[None].astype(np.float32, copy=False),
        "mask": crop(volume.mask, start, big, 0)[None].astype(np.float32),
        "affine": affine.astype(np.float64),
        "augmented": np.asarray(augmented),
    }


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset over a list of patch specs (one epoch's, for one rank)."""

    def __init__(self, volumes: Sequence[TrainVolume], specs: Sequence[PatchSpec], patch_size: Sequence[int]) -> None:
        self.volumes = list(volumes)
        self.specs = list(specs)
        self.patch_size = tuple(int(p) for p in patch_size)

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        spec = self.specs[index]
        arrays = extract_patch(self.volumes[spec.volume], spec, self.patch_size)
        return {key: torch.from_numpy(value) for key, value in arrays.items()}


def make_loader(volumes: Sequence[TrainVolume], specs: Sequence[PatchSpec], config: Config,
                seed: int) -> torch.utils.data.DataLoader:
    """Batches of ``train.batch_size`` patches in spec order (no shuffling: the specs are already random)."""
    workers = config.data.num_workers
    return torch.utils.data.DataLoader(
        PatchDataset(volumes, specs, config.data.patch_size),
        batch_size=config.train.batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        multiprocessing_context=WORKER_START if workers > 0 else None,
    )


class EpochPatchDataset(torch.utils.data.Dataset):
    """Item ``(epoch, index)`` → the ``index``-th patch of ``epoch``'s draw for this rank (:func:`draw_epoch_specs`,
    ``patches_per_epoch`` specs); every process redraws an epoch's specs once, so the loader needs no restart at an
    epoch boundary. With ``crops`` the items are :func:`extract_crop`'s, for augmentation on the device."""

    def __init__(self, volumes: Sequence[TrainVolume], config: Config, seed: int, rank: int, patches_per_epoch: int,
                 crops: bool = False) -> None:
        self.volumes = list(volumes)
        self.config = config
        self.seed = seed
        self.rank = rank
        self.patches_per_epoch = patches_per_epoch
        self.crops = crops
        self.patch_size = tuple(int(p) for p in config.data.patch_size)
        self._epoch: int | None = None
        self._specs: list[PatchSpec] = []
        self._served = 0

    def specs(self, epoch: int) -> list[PatchSpec]:
        if epoch != self._epoch:
            self._specs = draw_epoch_specs(self.volumes, self.patches_per_epoch, self.config, self.seed, self.rank,
                                           epoch)
            self._epoch = epoch
        return self._specs

    def __len__(self) -> int:
        return self.patches_per_epoch

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        spec = self.specs(int(epoch))[int(index)]
        volume = self.volumes[spec.volume]
        if self.crops:
            arrays = extract_crop(volume, spec, self.patch_size)
        else:
            arrays = extract_patch(volume, spec, self.patch_size)
        self._served += 1
        if self._served % RELEASE_EVERY_PATCHES == 0:
            for each in self.volumes:
                each.release()
        return {key: torch.from_numpy(np.asarray(value)) for key, value in arrays.items()}


class EpochBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys from (``start_epoch``, step ``start_step``) to the end of ``epochs``:
    ``steps_per_epoch`` batches of ``batch_size`` per epoch, in spec order (the specs are already random)."""

    def __init__(self, start_epoch: int, start_step: int, epochs: int, steps_per_epoch: int, batch_size: int) -> None:
        self.start_epoch, self.start_step = start_epoch, start_step
        self.epochs, self.steps_per_epoch, self.batch_size = epochs, steps_per_epoch, batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.start_epoch, self.epochs):
            first = self.start_step if epoch == self.start_epoch else 0
            for step in range(first, self.steps_per_epoch):
                yield [(epoch, step * self.batch_size + j) for j in range(self.batch_size)]

    def __len__(self) -> int:
        total = max(0, self.epochs - self.start_epoch) * self.steps_per_epoch
        return max(0, total - (self.start_step if self.epochs > self.start_epoch else 0))


def make_epoch_loader(volumes: Sequence[TrainVolume], config: Config, *, seed: int, rank: int, start_epoch: int,
                      start_step: int, steps_per_epoch: int, crops: bool = False,
                      pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """One loader for the rest of the run: persistent workers (no process start at epoch boundaries), each
    prefetching ``data.prefetch_factor`` batches, pinned host memory when ``pin_memory`` (CUDA)."""
    data = config.data
    batch_size = config.train.batch_size
    dataset = EpochPatchDataset(volumes, config, seed, rank, steps_per_epoch * batch_size, crops)
    sampler = EpochBatchSampler(start_epoch, start_step, config.train.epochs, steps_per_epoch, batch_size)
    workers = data.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
        prefetch_factor=data.prefetch_factor if workers > 0 else None, pin_memory=pin_memory,
        multiprocessing_context=WORKER_START if workers > 0 else None,
    )


def augment_on_device(config: Config, device: torch.device) -> bool:
    """Where augmentation runs: ``data.augment.where`` (auto: on the device when it is a GPU, else in the loader)."""
    where = config.data.augment.where
    if not config.data.augment.enabled:
        return False
    if where == "auto":
        return device.type == "cuda"
    return where == "device"
