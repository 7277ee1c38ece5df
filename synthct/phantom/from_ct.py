"""Paired cases from a real CT: tissue classes by HU thresholds, a simulated T1-like MR, a random deformation per case.

For each case the CT is warped by a random smooth deformation (2-5 mm, ~80 mm features; linear interpolation),
classified into tissues (outside-body background, internal air, fat, water/CSF, soft tissues, cancellous and
cortical bone, teeth/metal), and an MR is simulated from the classes as for the phantoms (per-case random contrast,
bias field, partial volume, Rician noise), with bone intensity falling as its HU rises. The body mask is made like
SynthRAD's (threshold, largest component, holes filled per slice, dilated 4 mm). Output geometry is the CT's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from synthct import __version__
from synthct.atomic import write_json_atomic
from synthct.io import array_to_image, read_image, write_image
from synthct.phantom import tissues as T
from synthct.phantom.ct import tissue_texture
from synthct.phantom.fields import smooth_field
from synthct.phantom.mask import body_mask_from_ct, fill_holes_per_slice, largest_component
from synthct.phantom.mr import simulate_mr
from synthct.phantom.writer import MANIFEST, case_id, case_seed

# Upper HU bounds of the soft-tissue classes (on the CT smoothed by 0.7 mm), per region.
_SOFT_CLASSES = {
    "brain": ((15.0, T.CSF), (33.0, T.WHITE_MATTER), (120.0, T.GREY_MATTER)),
    "pelvis": ((15.0, T.URINE), (120.0, T.MUSCLE)),
}


def classify_ct(hu: np.ndarray, spacing_mm: tuple[float, float, float], region: str) -> np.ndarray:
    """Tissue labels (z, y, x) uint8 of a CT in HU by thresholds; background outside the (undilated) body."""
    if region not in _SOFT_CLASSES:
        raise ValueError(f"--from-ct region must be one of {sorted(_SOFT_CLASSES)}, got {region!r}")
    body = fill_holes_per_slice(largest_component(hu > -400.0))
    smooth = ndimage.gaussian_filter(hu, [0.7 / s for s in spacing_mm], mode="nearest")
    labels = np.full(hu.shape, T.INTERNAL_AIR, dtype=np.uint8)
    labels[smooth > -250.0] = T.FAT
    lower = -30.0
    for upper, label in _SOFT_CLASSES[region]:
        labels[(smooth > lower) & (smooth <= upper)] = label
        lower = upper
    labels[hu > 120.0] = T.CANCELLOUS_BONE
    labels[hu > 500.0] = T.CORTICAL_BONE
    if region == "brain":
        labels[hu > 2200.0] = T.TEETH
    labels[~body] = T.BACKGROUND
    return labels


def deform(volume: np.ndarray, spacing_mm: tuple[float, float, float], amplitude_mm: float,
           rng: np.random.Generator, cell_mm: float = 40.0) -> np.ndarray:
    """``volume`` (z, y, x) warped by a random smooth displacement of about ``amplitude_mm`` (linear interpolation,
    edge values outside). Returns float32."""
    displacement = smooth_field(volume.shape, spacing_mm, cell_mm, rng, components=3)
    coordinates = np.empty_like(displacement)
    for axis in range(3):
        index = np.arange(volume.shape[axis], dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        coordinates[axis] = index + displacement[axis] * np.float32(amplitude_mm / spacing_mm[axis])
    del displacement
    return ndimage.map_coordinates(volume.astype(np.float32, copy=False), coordinates, order=1, mode="nearest",
                                   output=np.float32)


def simulate_pair(hu: np.ndarray, spacing_mm: tuple[float, float, float], region: str, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One case from a CT array: ``(ct int16 HU, mr int16, mask uint8, labels uint8)``, all (z, y, x)."""
    rng = np.random.default_rng(seed)
    ct = deform(hu, spacing_mm, rng.uniform(2.0, 5.0), rng)
    labels = classify_ct(ct, spacing_mm, region)
    hu_mean, _, mr_relative, mr_texture = T.draw_table(T.TISSUES[region], rng)
    del hu_mean
    # Marrow is bright in T1, dense bone dark: cancellous intensity falls as its HU rises.
    modulation = np.where(labels == T.CANCELLOUS_BONE, np.clip((900.0 - ct) / 750.0, 0.05, 1.0), 1.0)
    reference = rng.uniform(400.0, 1200.0) if region == "brain" else rng.uniform(800.0, 2000.0)
    texture = tissue_texture(labels, spacing_mm, rng)
    mr = simulate_mr(labels, spacing_mm, mr_relative, mr_texture, texture, rng, reference=reference,
                     noise_fraction=rng.uniform(0.015, 0.04), bias_strength=rng.uniform(0.06, 0.2),
                     modulation=modulation.astype(np.float32))
    mask = body_mask_from_ct(ct, spacing_mm, dilation_mm=4.0)
    ct_int = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)
    mr_int = np.clip(np.rint(mr), 0, 32767).astype(np.int16)
    return ct_int, mr_int, mask, labels


def write_from_ct_dataset(ct_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], region: str,
                          n_cases: int, seed: int = 0, progress: bool = True) -> list[Path]:
    """Write ``n_cases`` paired cases made from the CT at ``ct_path`` to ``out_dir/Task1/<region>/<ID>/`` (.mha)
    with a ``phantom.json`` manifest (source file and its sha256, per-case seeds)."""
    if n_cases < 1:
        raise ValueError(f"number of cases must be at least 1, got {n_cases}")
    if region not in _SOFT_CLASSES:
        raise ValueError(f"--from-ct region must be one of {sorted(_SOFT_CLASSES)}, got {region!r}")
    source = read_image(ct_path)
    hu = sitk.GetArrayFromImage(source).astype(np.float32)
    if not np.all(np.isfinite(hu)):
        raise ValueError(f"{ct_path}: CT holds NaN or infinite values")
    if (hu > -400).sum() < 1000:
        raise ValueError(f"{ct_path}: CT shows no body (fewer than 1000 voxels above -400 HU)")
    sx, sy, sz = (float(s) for s in source.GetSpacing())
    spacing = (sz, sy, sx)
    region_dir = Path(out_dir) / "Task1" / region
    folders, entries = [], []
    for index in tqdm(range(1, n_cases + 1), desc=f"from-ct {region}", unit="case", disable=not progress):
        identifier, seed_k = case_id(region, index), case_seed(seed, region, index)
        ct, mr, mask, _ = simulate_pair(hu, spacing, region, seed_k)
        folder = region_dir / identifier
        write_image(array_to_image(mr, source), folder / "mr.mha")
        write_image(array_to_image(ct, source), folder / "ct.mha")
        write_image(array_to_image(mask, source), folder / "mask.mha")
        folders.append(folder)
        entries.append({"id": identifier, "seed": seed_k})
    digest = hashlib.sha256(Path(ct_path).read_bytes()).hexdigest() if Path(ct_path).is_file() else None
    write_json_atomic(region_dir / MANIFEST, {"generator": f"synthct {__version__} (from CT)", "region": region,
                                              "source": str(ct_path), "source_sha256": digest, "seed": int(seed),
                                              "cases": entries})
    return folders
