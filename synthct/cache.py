"""The preprocessed dataset cache: each case normalised, cropped and stored as plain ``.npy`` files to memory-map.

Like nnU-Net's preprocessing, the work of reading compressed images, normalising and cropping is done once
(``synthct data prepare`` or the trainer's first start) instead of in every rank of every run. Layout::

    CACHE/manifest.json
    CACHE/cases/<ID>/mr.npy          normalised MR, float32 (the configured rule of synthct.intensity.normalise_mr)
    CACHE/cases/<ID>/ct.npy          normalised CT in [-1, 1], float32
    CACHE/cases/<ID>/ct_hu.npy       CT in HU (int16 when the source holds integers that fit, else float32)
    CACHE/cases/<ID>/mask.npy        body mask, uint8 in {0, 1}
    CACHE/cases/<ID>/foreground.npy  flat indices of body voxels (int64; evenly strided above a cap)

Arrays are (z, y, x) in the canonical orientation (:mod:`synthct.geometry`: axes permuted and flipped so that x,
y, z point to the patient's L, P, S; no interpolation; the source's orientation code is recorded per case, and
``spacing_mm`` and the crop refer to the canonical axes), cropped to the body's bounding box plus
``margin_voxels`` on every side (limited by the volume), then padded evenly with air to at least ``min_shape``
(the MR with the case's normalised MR 0, :func:`synthct.intensity.normalised_background`: -1 for max and
percentile, ``-offset / scale`` for zscore). The MR is normalised on the whole volume before cropping, so cropping
does not change its scale.

The manifest records, per case, each source file's path (relative to the dataset root), size and mtime, the crop,
the MR statistics (the rule's offset and scale, and ``mr_background``: the normalised MR 0 the MR is padded
with) and every array's dtype, shape, byte size and sha256; globally the
settings (region, MR rule and percentile, margin, minimum shape, orientation), the geometry of all its cases
(orientation and per-axis median spacing; the trainer records the median over its training split in the checkpoint,
and ``synthct export`` puts that into ``model.json``), the synthct version and a sha256 of its own content. A cache
is *stale* for a case when a source changed, an array file is missing, truncated or has another header, the settings
or the synthct version differ, or the manifest was edited (its checksum fails): :func:`prepare_cache` names every
such problem and rebuilds what it concerns; :func:`open_cache` refuses a stale cache with a :class:`CacheError`.
Each array file is written to a temporary file and renamed, and a case enters the manifest only once all its files
are in place.

numpy + SimpleITK only (no torch): the core.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import math
import mmap
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import synthct
from synthct.atomic import atomic_path, write_json_atomic
from synthct.dataset import Case, CaseVolumes, DatasetError, find_cases, load_case
from synthct.geometry import (
    CANONICAL_ORIENTATION,
    NetworkGeometry,
    canonical_reorientation,
    orientation_code,
    training_geometry,
)
from synthct.intensity import (
    HU_MIN,
    MR_RULES,
    MrRule,
    apply_mr_statistics,
    mr_statistics,
    normalise_ct,
    normalised_background,
)
from synthct.outputs import remove_stale_temporaries
from synthct.regions import canonical_region
from synthct.sliding_window import pad_to_shape, padding

log = logging.getLogger("synthct.cache")

CACHE_FORMAT = "synthct-dataset-cache"
CACHE_VERSION = 4
"""2: every case in the canonical orientation (:data:`synthct.geometry.CANONICAL_ORIENTATION`). 3: sources read
complete or not at all (:mod:`synthct.integrity`): an older cache may hold a truncated ``.nii.gz`` read as zeros.
4: the MR rules of :data:`synthct.intensity.MR_RULES` (``percentile`` now clips to a lower percentile too) and each
case's ``mr_offset``. Each case's ``mr_background`` (its normalised MR 0, the MR's padding) was added within 4:
an entry without it is read as -1 (what max and percentile pad with) and is stale for zscore (padded with -1)."""
MANIFEST_NAME = "manifest.json"
CASES_FOLDER = "cases"
DEFAULT_CACHE_FOLDER = ".synthct-cache"
"""Default cache location: ``<dataset root>/.synthct-cache/<region>`` (a dot-folder is never taken for a case)."""
MAX_FOREGROUND_INDICES = 2_000_000
"""At most this many body-voxel indices are kept per case (evenly strided) for patch-centre sampling."""
ARRAY_NAMES = ("mr", "ct", "ct_hu", "mask", "foreground")
PAD_VALUES: dict[str, float] = {"ct": -1.0, "ct_hu": HU_MIN, "mask": 0}
"""Fill value of each array but the MR where the crop is padded up to ``min_shape`` (air); the MR's is the case's
normalised MR 0 (``mr_background``)."""
LEGACY_MR_BACKGROUND = -1.0
"""``mr_background`` of an entry written before it was recorded: the -1 every MR was then padded with."""


class CacheError(ValueError):
    """A cache is missing, stale or corrupt; ``problems`` lists each, naming the case and file."""

    def __init__(self, cache_dir: str | os.PathLike[str], problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{cache_dir}: dataset cache is not usable ({len(self.problems)} problem(s)):\n  "
                         + "\n  ".join(self.problems))


@dataclass(frozen=True)
class CacheSettings:
    """What a cache is built for. ``margin_voxels`` should be at least half the training patch on every axis."""

    region: str
    mr_rule: MrRule = "max"
    mr_percentile: float = 99.5
    margin_voxels: int = 32
    min_shape: tuple[int, int, int] = (64, 64, 64)

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "mr_rule": self.mr_rule, "mr_percentile": float(self.mr_percentile),
                "margin_voxels": int(self.margin_voxels), "min_shape": [int(v) for v in self.min_shape],
                "orientation": CANONICAL_ORIENTATION}

    def check(self) -> None:
        """Raise ``ValueError`` for an unknown region or rule, a negative margin or a non-positive shape."""
        canonical_region(self.region)
        if self.mr_rule not in MR_RULES:
            raise ValueError(f"MR rule must be one of {', '.join(map(repr, MR_RULES))}, got {self.mr_rule!r}")
        if not 0.0 < self.mr_percentile <= 100.0:
            raise ValueError(f"MR percentile must be in (0, 100], got {self.mr_percentile}")
        if self.margin_voxels < 0 or len(self.min_shape) != 3 or min(self.min_shape) < 1:
            raise ValueError(f"margin must be ≥ 0 and min_shape 3 positive sizes, got {self.margin_voxels}, "
                             f"{self.min_shape}")


def settings_for_patch(region: str, patch_size: Sequence[int], mr_rule: MrRule = "max",
                       mr_percentile: float = 99.5) -> CacheSettings:
    """Settings a run with this patch needs: margin half the largest patch edge, volumes at least one patch."""
    pz, py, px = (int(p) for p in patch_size)
    return CacheSettings(canonical_region(region), mr_rule, float(mr_percentile), math.ceil(max(pz, py, px) / 2),
                         (pz, py, px))


def settings_problems(cached: dict[str, Any], wanted: CacheSettings) -> list[str]:
    """Why a cache built with ``cached`` settings cannot serve ``wanted`` (a larger margin / shape is fine)."""
    problems = []
    want = wanted.to_dict()
    for key in ("region", "mr_rule", "mr_percentile", "orientation"):
        if cached.get(key) != want[key]:
            problems.append(f"settings: {key} is {cached.get(key)!r} in the cache, {want[key]!r} wanted")
    margin = cached.get("margin_voxels")
    if not isinstance(margin, int) or margin < wanted.margin_voxels:
        problems.append(f"settings: crop margin is {margin!r} voxels in the cache, at least {wanted.margin_voxels} "
                        "wanted (half a patch)")
    shape = cached.get("min_shape")
    if not isinstance(shape, list) or len(shape) != 3 or any(int(c) < w for c, w in zip(shape, wanted.min_shape,
                                                                                           strict=True)):
        problems.append(f"settings: minimum shape is {shape!r} in the cache, at least {list(wanted.min_shape)} "
                        "wanted (one patch)")
    return problems


def default_cache_dir(root: str | os.PathLike[str], region: str) -> Path:
    """``<root>/.synthct-cache/<region>``."""
    return Path(root) / DEFAULT_CACHE_FOLDER / canonical_region(region)


# ------------------------------------------------------------------------------------------------ cached cases
@dataclass(frozen=True)
class CachedCase:
    """One case in a cache: its folder and the arrays' shape (z, y, x); arrays open as read-only memory maps."""

    case_id: str
    folder: Path
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    crop_start: tuple[int, int, int]
    """First source voxel (z, y, x) of the crop."""
    pad_before: tuple[int, int, int]
    """Voxels of padding before the crop on each axis (array index = source index - crop_start + pad_before)."""
    mr_background: float = LEGACY_MR_BACKGROUND
    """The case's normalised MR 0 (:func:`synthct.intensity.normalised_background`): the MR's padding value."""

    def open(self, name: str) -> np.ndarray:
        """The array ``name`` (one of :data:`ARRAY_NAMES`) as a read-only memory map."""
        if name not in ARRAY_NAMES:
            raise KeyError(f"unknown cached array {name!r} (expected one of {ARRAY_NAMES})")
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")


@dataclass
class CacheIndex:
    """An opened, checked cache: its folder, manifest and cases by id (dataset order)."""

    cache_dir: Path
    manifest: dict[str, Any]
    cases: dict[str, CachedCase]


def cases_geometry(index: CacheIndex, case_ids: Sequence[str]) -> NetworkGeometry:
    """The training geometry of ``case_ids``: canonical orientation, per-axis median spacing (z, y, x) mm."""
    return training_geometry([index.cases[case_id].spacing_mm for case_id in case_ids])


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of the memory map behind ``array`` from this process (``MADV_DONTNEED``).

    The data stays in the page cache (shared with other processes); only this process's resident set shrinks.
    A no-op for an array not backed by a memory map.
    """
    node: Any = array
    while node is not None:
        handle = getattr(node, "_mmap", None)
        if isinstance(handle, mmap.mmap):
            if hasattr(mmap, "MADV_DONTNEED"):
                try:
                    handle.madvise(mmap.MADV_DONTNEED)
                except (OSError, ValueError):  # closed map, or a platform refusing it
                    return
            return
        node = getattr(node, "base", None)


# ------------------------------------------------------------------------------------------------ manifest
def _manifest_checksum(manifest: dict[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()


def _write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    manifest = dict(manifest)
    manifest["checksum"] = _manifest_checksum(manifest)
    write_json_atomic(cache_dir / MANIFEST_NAME, manifest)


def read_manifest(cache_dir: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest, problems): None and the reason when it is missing, unreadable, not a cache manifest, of another
    format version or edited (checksum mismatch)."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return None, [f"{path}: no manifest (cache not built)"]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{path}: manifest is not readable JSON ({exc})"]
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        return None, [f"{path}: not a synthct dataset cache manifest"]
    if manifest.get("format_version") != CACHE_VERSION:
        return None, [f"{path}: cache format version {manifest.get('format_version')!r}, this synthct writes "
                      f"{CACHE_VERSION}"]
    if manifest.get("checksum") != _manifest_checksum(manifest):
        return None, [f"{path}: manifest was altered after it was written (checksum mismatch)"]
    if not isinstance(manifest.get("cases"), dict) or not isinstance(manifest.get("settings"), dict):
        return None, [f"{path}: manifest lacks its cases or settings"]
    return manifest, []


def _source_stat(path: Path, root: Path) -> dict[str, Any]:
    stat = path.stat()
    try:
        relative = str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        relative = str(path.resolve())
    return {"path": relative, "bytes": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def _case_sources(case: Case) -> dict[str, Path]:
    return {name: path for name, path in (("mr", case.mr), ("ct", case.ct), ("mask", case.mask)) if path is not None}


def _case_problems(case: Case, entry: Any, case_dir: Path, root: Path, verify_hashes: bool,
                   mr_rule: MrRule) -> list[str]:
    """Why the cached ``entry`` of ``case`` cannot be used (empty: it can)."""
    if not isinstance(entry, dict):
        return [f"{case.case_id}: not in the cache"]
    problems = []
    background = entry.get("mr_background")
    if background is None and mr_rule == "zscore":
        problems.append(f"{case.case_id}: MR padded with -1, not its normalised MR 0 (cached before the MR "
                        "background was recorded)")
    elif background is not None and (isinstance(background, bool) or not isinstance(background, int | float)
                                     or not math.isfinite(background)):
        problems.append(f"{case.case_id}: MR background {background!r} in the manifest is not a finite number")
    recorded = entry.get("sources", {})
    for name, path in _case_sources(case).items():
        try:
            now = _source_stat(path, root)
        except OSError as exc:
            problems.append(f"{case.case_id}: {path}: cannot stat the source ({exc})")
            continue
        before = recorded.get(name) if isinstance(recorded, dict) else None
        if before != now:
            what = "is new" if not isinstance(before, dict) else ", ".join(
                f"{key} {before.get(key)!r} → {now[key]!r}" for key in now if before.get(key) != now[key])
            problems.append(f"{case.case_id}: source {path} changed since the cache was built ({what})")
    arrays = entry.get("arrays", {})
    for name in ARRAY_NAMES:
        info = arrays.get(name) if isinstance(arrays, dict) else None
        path = case_dir / f"{name}.npy"
        if not isinstance(info, dict):
            problems.append(f"{case.case_id}: {name}.npy is not recorded in the manifest")
            continue
        problem = _array_problem(path, info, verify_hashes)
        if problem:
            problems.append(f"{case.case_id}: {path}: {problem}")
    return problems


def _array_problem(path: Path, info: dict[str, Any], verify_hash: bool) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot stat ({exc})"
    if size != info.get("bytes"):
        return f"{size} bytes, {info.get('bytes')} written (truncated or replaced)"
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                return f".npy format version {version} not supported"
            shape, fortran, dtype = reader(handle)
    except (OSError, ValueError) as exc:
        return f"not a readable .npy file ({exc})"
    if list(shape) != info.get("shape") or str(dtype) != info.get("dtype") or fortran:
        return f"header says {dtype} {list(shape)}, manifest {info.get('dtype')} {info.get('shape')}"
    if verify_hash:
        array = np.load(path, mmap_mode="r")
        if _sha256(array) != info.get("sha256"):
            return "content differs from the sha256 recorded when it was written"
    return None


def _sha256(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    flat = array.reshape(-1)
    step = max(1, (64 << 20) // max(1, array.itemsize))
    for start in range(0, flat.size, step):
        digest.update(np.ascontiguousarray(flat[start:start + step]).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ building
def body_box(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(start, stop) of the body mask's bounding box, (z, y, x); stop exclusive. Raises for an empty mask."""
    starts, stops = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=others))
        if present.size == 0:
            raise ValueError("the body mask is empty")
        starts.append(int(present[0]))
        stops.append(int(present[-1]) + 1)
    (z0, y0, x0), (z1, y1, x1) = starts, stops
    return (z0, y0, x0), (z1, y1, x1)


def crop_box(mask: np.ndarray, margin: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The body box grown by ``margin`` voxels on every side, limited to the volume."""
    (z0, y0, x0), (z1, y1, x1) = body_box(mask)
    nz, ny, nx = mask.shape
    return ((max(0, z0 - margin), max(0, y0 - margin), max(0, x0 - margin)),
            (min(nz, z1 + margin), min(ny, y1 + margin), min(nx, x1 + margin)))


def _write_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` to ``path`` atomically (temporary file, fsync, rename); return its manifest record."""
    array = np.ascontiguousarray(array)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {"dtype": str(array.dtype), "shape": [int(s) for s in array.shape], "bytes": int(path.stat().st_size),
            "sha256": _sha256(array)}


def _ct_hu_array(ct: np.ndarray) -> np.ndarray:
    """The CT in HU as int16 when lossless, else float32."""
    if ct.size and float(ct.min()) >= -32768 and float(ct.max()) <= 32767 and np.array_equal(ct, np.rint(ct)):
        return ct.astype(np.int16)
    return ct.astype(np.float32, copy=False)


def _canonical(volumes: CaseVolumes) -> CaseVolumes:
    """The case's arrays in the canonical orientation (axis permutation and flips only, no interpolation)."""
    reorientation = canonical_reorientation(volumes.image)
    if reorientation.is_identity:
        return volumes
    image = reorientation.apply_to_image(volumes.image)

    def apply(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(reorientation.apply(array))

    x, y, z = image.GetSpacing()
    return CaseVolumes(volumes.case_id, apply(volumes.mr), None if volumes.ct is None else apply(volumes.ct),
                       apply(volumes.mask), image, (float(z), float(y), float(x)))


def build_case(case: Case, case_dir: Path, settings: CacheSettings, root: Path) -> dict[str, Any]:
    """Read, normalise, crop and write one case; return its manifest entry. Raises :class:`DatasetError` naming
    the case and file for unreadable, mismatched or empty input, ``ValueError`` for a case without CT."""
    sources = {name: _source_stat(path, root) for name, path in _case_sources(case).items()}
    volumes = load_case(case)
    source_orientation = orientation_code(volumes.image.GetDirection())
    volumes = _canonical(volumes)
    ct = volumes.ct
    if ct is None:
        raise DatasetError([f"{case.case_id}: no CT: the training cache needs paired MR and CT"])
    try:  # measured on the whole volume, so cropping does not change the normalisation
        statistics = mr_statistics(volumes.mr, volumes.mask, settings.mr_rule, settings.mr_percentile)
    except ValueError as exc:
        raise DatasetError([f"{case.case_id}: {case.mr}: {exc}"]) from exc
    start, stop = crop_box(volumes.mask, settings.margin_voxels)
    window = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    mr = apply_mr_statistics(volumes.mr[window], statistics)
    background = normalised_background(statistics)
    cropped = {"mr": mr, "ct": normalise_ct(ct[window]), "ct_hu": _ct_hu_array(ct[window]),
               "mask": volumes.mask[window].astype(np.uint8)}
    pads = padding(mr.shape, settings.min_shape)
    pad_values = {**PAD_VALUES, "mr": background}
    cropped = {name: pad_to_shape(array, settings.min_shape, pad_values[name]) for name, array in cropped.items()}
    foreground = np.flatnonzero(cropped["mask"])
    if foreground.size > MAX_FOREGROUND_INDICES:
        foreground = foreground[:: math.ceil(foreground.size / MAX_FOREGROUND_INDICES)]
    cropped["foreground"] = foreground.astype(np.int64)
    case_dir.mkdir(parents=True, exist_ok=True)
    arrays = {name: _write_npy(case_dir / f"{name}.npy", cropped[name]) for name in ARRAY_NAMES}
    return {
        "region": case.region,
        "sources": sources,
        "source_orientation": source_orientation,
        "source_shape": [int(s) for s in volumes.mask.shape],
        "spacing_mm": [float(s) for s in volumes.spacing_mm],
        "crop": {"start": list(start), "stop": list(stop), "pad_before": [p[0] for p in pads],
                 "pad_after": [p[1] for p in pads]},
        "shape": [int(s) for s in cropped["mask"].shape],
        "mr_offset": statistics.offset,
        "mr_scale": statistics.scale,
        "mr_background": background,
        "arrays": arrays,
    }


def _build_case_job(case: Case, case_dir: str, settings: CacheSettings, root: str) -> tuple[str, Any, str | None]:
    """Worker entry point: (case id, entry or None, error message or None); never raises for bad input."""
    try:
        return case.case_id, build_case(case, Path(case_dir), settings, Path(root)), None
    except (DatasetError, ValueError, OSError) as exc:
        return case.case_id, None, str(exc)


def _empty_manifest(root: Path, settings: CacheSettings) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "format_version": CACHE_VERSION, "synthct_version": str(synthct.__version__),
            "root": str(root.resolve()), "settings": settings.to_dict(), "cases": {}}


def stale_cases(cases: Sequence[Case], cache_dir: Path, settings: CacheSettings, root: Path,
                verify_hashes: bool = False) -> tuple[dict[str, Any] | None, dict[str, list[str]], list[str]]:
    """(manifest or None, case id → problems of the cases needing a (re)build, problems concerning every case)."""
    manifest, global_problems = read_manifest(cache_dir)
    if manifest is not None:
        global_problems += settings_problems(manifest["settings"], settings)
        if manifest.get("synthct_version") != str(synthct.__version__):
            global_problems.append(f"built by synthct {manifest.get('synthct_version')!r}, this is "
                                   f"{synthct.__version__}")
    if global_problems:
        return manifest, {case.case_id: [] for case in cases}, global_problems
    assert manifest is not None
    stale = {}
    for case in cases:
        problems = _case_problems(case, manifest["cases"].get(case.case_id), _case_dir(cache_dir, case.case_id),
                                  root, verify_hashes, settings.mr_rule)
        if problems:
            stale[case.case_id] = problems
    return manifest, stale, []


def _case_dir(cache_dir: Path, case_id: str) -> Path:
    return cache_dir / CASES_FOLDER / case_id


@contextlib.contextmanager
def _exclusive(cache_dir: Path) -> Iterator[None]:
    """Hold ``CACHE/.lock`` (flock) while building: two runs starting together build the cache once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(cache_dir / ".lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare_cache(root: str | os.PathLike[str], settings: CacheSettings,
                  cache_dir: str | os.PathLike[str] | None = None, workers: int = 1, progress: bool = True,
                  verify_hashes: bool = False,
                  report: Callable[[str], None] | None = None) -> CacheIndex:
    """Build the cache of every case of ``settings.region`` under ``root``, or bring it up to date: only what is
    missing or stale is (re)built, each problem found is reported (``report``, default: a log warning).

    Cases are built by ``workers`` processes; each case's files are written atomically and the manifest is
    rewritten (atomically) after every case, so an interrupted build keeps what it finished; a lock file keeps two
    processes from building the same cache at once. Raises :class:`DatasetError` (bad dataset or case) or
    :class:`CacheError` (cache folder not writable).
    """
    settings.check()
    root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root, settings.region)
    try:
        lock = _exclusive(cache_dir)
        lock.__enter__()
    except OSError as exc:
        raise CacheError(cache_dir, [f"cannot write the cache ({exc}); choose a writable folder (--out / "
                                     "data.cache_dir)"]) from exc
    try:
        return _prepare_locked(root, settings, cache_dir, workers, progress, verify_hashes, report or log.warning)
    finally:
        lock.__exit__(None, None, None)


def _prepare_locked(root: Path, settings: CacheSettings, cache_dir: Path, workers: int, progress: bool,
                    verify_hashes: bool, report: Callable[[str], None]) -> CacheIndex:
    cases_folder = cache_dir / CASES_FOLDER
    case_folders = sorted(p for p in cases_folder.iterdir() if p.is_dir()) if cases_folder.is_dir() else []
    remove_stale_temporaries([cache_dir, cases_folder, *case_folders])  # we hold the cache's lock: all are stale
    cases = find_cases(root, region=settings.region)
    manifest, stale, global_problems = stale_cases(cases, cache_dir, settings, root, verify_hashes)
    fresh_start = bool(global_problems)
    if manifest is not None or (cache_dir / MANIFEST_NAME).exists():
        for problem in global_problems:
            report(f"dataset cache {cache_dir}: {problem}: rebuilding every case")
        for problems in stale.values():
            for problem in problems:
                report(f"dataset cache {cache_dir}: {problem}: rebuilding the case")
    if fresh_start or manifest is None:
        manifest = _empty_manifest(root, settings)
    manifest["settings"] = settings.to_dict()
    manifest["root"] = str(root.resolve())
    wanted = {case.case_id for case in cases}
    removed = sorted(set(manifest["cases"]) - wanted)
    for case_id in removed:
        manifest["cases"].pop(case_id)
        shutil.rmtree(_case_dir(cache_dir, case_id), ignore_errors=True)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for case_id in stale:
            manifest["cases"].pop(case_id, None)
        if stale or removed or fresh_start or not (cache_dir / MANIFEST_NAME).is_file():
            _write_manifest(cache_dir, manifest)
    except OSError as exc:
        raise CacheError(cache_dir, [f"cannot write the cache ({exc}); choose a writable folder (--out / "
                                     "data.cache_dir)"]) from exc
    todo = [case for case in cases if case.case_id in stale]
    errors: list[str] = []
    if todo:
        bar = tqdm(total=len(todo), desc=f"preparing {cache_dir.name} cache", unit="case", disable=not progress)
        jobs = [(case, str(_case_dir(cache_dir, case.case_id)), settings, str(root)) for case in todo]
        try:
            if workers > 1 and len(todo) > 1:
                # The process's default start method (fork on Linux): a spawn/forkserver pool re-runs the caller's
                # __main__ in every worker, so a script without a main guard (a torchrun rank script) would hang
                # here. The test suite makes forkserver its default (tests/fork_guard.py), so it never forks itself.
                with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                    futures = [pool.submit(_build_case_job, *job) for job in jobs]
                    for future in concurrent.futures.as_completed(futures):
                        _record(manifest, cache_dir, future.result(), errors)
                        bar.update(1)
            else:
                for job in jobs:
                    _record(manifest, cache_dir, _build_case_job(*job), errors)
                    bar.update(1)
        finally:
            bar.close()
    if errors:
        raise DatasetError(errors, root)
    order = {case.case_id: index for index, case in enumerate(cases)}
    manifest["cases"] = dict(sorted(manifest["cases"].items(), key=lambda item: order[item[0]]))
    if manifest["cases"]:
        manifest["geometry"] = training_geometry([entry["spacing_mm"] for entry in manifest["cases"].values()]
                                                 ).to_dict()
    _write_manifest(cache_dir, manifest)
    return _index(cache_dir, manifest)


def _record(manifest: dict[str, Any], cache_dir: Path, result: tuple[str, Any, str | None], errors: list[str]) -> None:
    case_id, entry, error = result
    if error is not None:
        errors.append(error)
        return
    manifest["cases"][case_id] = entry
    _write_manifest(cache_dir, manifest)


def _index(cache_dir: Path, manifest: dict[str, Any]) -> CacheIndex:
    cases = {}
    for case_id, entry in manifest["cases"].items():
        crop = entry["crop"]
        cases[case_id] = CachedCase(case_id, _case_dir(cache_dir, case_id), tuple(entry["shape"]),
                                    tuple(entry["spacing_mm"]), tuple(crop["start"]), tuple(crop["pad_before"]),
                                    float(entry.get("mr_background", LEGACY_MR_BACKGROUND)))
    return CacheIndex(cache_dir, manifest, cases)


def open_cache(root: str | os.PathLike[str], settings: CacheSettings, cache_dir: str | os.PathLike[str] | None = None,
               verify_hashes: bool = False) -> CacheIndex:
    """The cache of ``root`` if it is complete and up to date for ``settings``; else :class:`CacheError` listing
    every problem (nothing is rebuilt: :func:`prepare_cache` does that)."""
    root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root, settings.region)
    cases = find_cases(root, region=settings.region)
    manifest, stale, global_problems = stale_cases(cases, cache_dir, settings, root, verify_hashes)
    problems = global_problems + [problem for case_problems in stale.values() for problem in case_problems]
    if problems or manifest is None:
        raise CacheError(cache_dir, problems or ["no manifest"])
    extra = set(manifest["cases"]) - {case.case_id for case in cases}
    index = _index(cache_dir, manifest)
    for case_id in extra:
        index.cases.pop(case_id)
    return index
