"""One phantom case: random pose, deformation and anatomy → labels → CT (HU), T1-like MR and body mask.

Regions: SynthRAD 2023's ``brain`` and ``pelvis``; SynthRAD 2025's ``hn`` (head and neck), ``th`` (thorax) and
``ab`` (abdomen). Sizes (voxels x, y, z) and spacings (x, y, z mm):

=========  ==================  ==================  ==================  ==================  ==================
size       brain               pelvis              hn                  th                  ab
=========  ==================  ==================  ==================  ==================  ==================
spacing    1 x 1 x 1           1 x 1 x 2.5         1 x 1 x 2           1.25 x 1.25 x 2.5   1.25 x 1.25 x 2.5
small      104 x 128 x 96      128 x 96 x 64       160 x 112 x 76      128 x 96 x 48       128 x 96 x 44
medium     160 x 192 x 144     256 x 192 x 96      272 x 192 x 128     256 x 192 x 80      256 x 192 x 72
synthrad   256 x 256 x 192     512 x 512 x 160     384 x 272 x 184     384 x 288 x 128     384 x 288 x 112
=========  ==================  ==================  ==================  ==================  ==================

``synthrad`` holds an adult-size anatomy; ``small`` and ``medium`` hold the same anatomy scaled down (brain 0.5
and 0.75; pelvis, thorax and abdomen 0.3/0.6 in-plane and 0.4/0.6 along z; head and neck 0.4/0.7) so that they fit
at the same spacing, with thin layers (skin, skull tables, bone cortex, ribs) shrunk less than the rest, so every
tissue stays a few voxels thick. The 2025 spacings lie within what SynthRAD 2025's Task 1 images have (about 1-1.5
mm in-plane, 1-3 mm slices, varying by centre and scanner): head and neck at 1 x 1 x 2 mm (thin-slice head MR, the
skull's and mandible's thin bone needs the in-plane millimetre), thorax and abdomen at 1.25 x 1.25 x 2.5 mm (their
larger field of view, 480 mm wide for a 330 mm body on a couch, at a memory cost like the pelvis's). The fields of
view: head and neck from the vertex to the shoulders (370 mm), thorax from the thoracic inlet to below the
diaphragm domes (320 mm), abdomen from the domes to the lower lumbar spine (280 mm).
A case is a pure function of (region, seed, size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from synthct.phantom.brain import paint_head
from synthct.phantom.canvas import Canvas
from synthct.phantom.ct import simulate_ct, tissue_texture
from synthct.phantom.fields import rotation_matrix, smooth_field
from synthct.phantom.mask import body_mask_from_ct
from synthct.phantom.mr import simulate_mr
from synthct.phantom.neck import paint_neck
from synthct.phantom.pelvis import paint_pelvis
from synthct.phantom.tissues import TISSUES, draw_table
from synthct.phantom.trunk import paint_trunk
from synthct.regions import REGIONS

SIZE_NAMES = ("small", "medium", "synthrad")
CT_MIN_HU, CT_MAX_HU = -1024, 3071
MR_MAX = 32767


@dataclass(frozen=True)
class SizeSpec:
    """Grid and scale of one region at one size. Tuples are (z, y, x)."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    scale: tuple[float, float, float]
    thin: float
    """Multiplier of thin-layer thicknesses (in anatomical mm)."""


SIZES: dict[str, dict[str, SizeSpec]] = {
    "brain": {
        "small": SizeSpec((96, 128, 104), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), 1.25),
        "medium": SizeSpec((144, 192, 160), (1.0, 1.0, 1.0), (0.75, 0.75, 0.75), 1.15),
        "synthrad": SizeSpec((192, 256, 256), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1.0),
    },
    "pelvis": {
        "small": SizeSpec((64, 96, 128), (2.5, 1.0, 1.0), (0.4, 0.3, 0.3), 2.6),
        "medium": SizeSpec((96, 192, 256), (2.5, 1.0, 1.0), (0.6, 0.6, 0.6), 1.35),
        "synthrad": SizeSpec((160, 512, 512), (2.5, 1.0, 1.0), (1.0, 1.0, 1.0), 1.0),
    },
    "hn": {
        "small": SizeSpec((76, 112, 160), (2.0, 1.0, 1.0), (0.4, 0.4, 0.4), 1.45),
        "medium": SizeSpec((128, 192, 272), (2.0, 1.0, 1.0), (0.7, 0.7, 0.7), 1.15),
        "synthrad": SizeSpec((184, 272, 384), (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1.0),
    },
    "th": {
        "small": SizeSpec((48, 96, 128), (2.5, 1.25, 1.25), (0.4, 0.3, 0.3), 2.6),
        "medium": SizeSpec((80, 192, 256), (2.5, 1.25, 1.25), (0.6, 0.6, 0.6), 1.35),
        "synthrad": SizeSpec((128, 288, 384), (2.5, 1.25, 1.25), (1.0, 1.0, 1.0), 1.0),
    },
    "ab": {
        "small": SizeSpec((44, 96, 128), (2.5, 1.25, 1.25), (0.4, 0.3, 0.3), 2.6),
        "medium": SizeSpec((72, 192, 256), (2.5, 1.25, 1.25), (0.6, 0.6, 0.6), 1.35),
        "synthrad": SizeSpec((112, 288, 384), (2.5, 1.25, 1.25), (1.0, 1.0, 1.0), 1.0),
    },
}
CENTRES: dict[str, tuple[float, float, float]] = {
    "brain": (0.0, 0.0, 0.0),
    "pelvis": (0.0, 0.0, 0.0),
    "hn": (-90.0, 5.0, 0.0),
    "th": (65.0, 25.0, 0.0),
    "ab": (-125.0, 25.0, 0.0),
}
"""Anatomical point (z, y, x mm at adult size) at the centre of each region's field of view (the thorax and the
abdomen share one trunk anatomy; the couch lies behind the back, hence y > 0)."""


@dataclass
class PhantomVolumes:
    """A generated case. Arrays (z, y, x): ``labels`` uint8 (see :mod:`synthct.phantom.tissues`), ``ct_hu`` int16,
    ``mr`` int16 (positive), ``mask`` uint8; geometry in SimpleITK order (x, y, z)."""

    region: str
    seed: int
    size: str
    labels: np.ndarray
    ct_hu: np.ndarray
    mr: np.ndarray
    mask: np.ndarray
    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def image(self, array: np.ndarray) -> sitk.Image:
        """``array`` as an image with this case's geometry."""
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetOrigin(self.origin_xyz_mm)
        image.SetDirection(self.direction)
        return image


def _check(region: str, size: str) -> SizeSpec:
    if region not in SIZES:
        raise ValueError(f"phantom region must be one of {REGIONS}, got {region!r}")
    if size not in SIZES[region]:
        raise ValueError(f"phantom size must be one of {SIZE_NAMES}, got {size!r}")
    return SIZES[region][size]


def make_canvas(region: str, spec: SizeSpec, rng: np.random.Generator) -> Canvas:
    """A canvas with a random pose (rotation, shift), size variation and smooth deformation for ``region``."""
    g = rng.uniform
    if region == "brain":
        angles = (g(-8, 8), g(-5, 5), g(-12, 12))  # yaw, roll, pitch (nodding)
        shift = np.array([g(-4, 4), g(-5, 5), g(-4, 4)])
        size = np.array([g(0.94, 1.04), g(0.94, 1.05), g(0.93, 1.06)])
        cell, amplitude = 35.0, g(2.0, 4.0)
    elif region == "hn":
        angles = (g(-5, 5), g(-3, 3), g(-7, 7))
        shift = np.array([g(-6, 6), g(-5, 5), g(-4, 4)])
        size = np.array([g(0.95, 1.04), g(0.94, 1.05), g(0.94, 1.05)])
        cell, amplitude = 40.0, g(2.0, 4.0)
    else:
        angles = (g(-4, 4), g(-2, 2), g(-4, 4))
        shift = np.array([g(-10, 10), g(-8, 8), g(-8, 8)])
        size = np.array([g(0.95, 1.05), g(0.94, 1.06), g(0.92, 1.06)])
        cell, amplitude = 50.0, g(3.0, 6.0)
    shift = shift - np.asarray(CENTRES[region])
    scale = np.asarray(spec.scale)
    physical_cell = [max(cell * s, 4.0 * sp) for s, sp in zip(scale, spec.spacing_mm, strict=True)]
    displacement = smooth_field(spec.shape, spec.spacing_mm, physical_cell, rng, components=3)
    displacement *= np.float32(amplitude * float(np.mean(scale)))
    return Canvas(spec.shape, spec.spacing_mm, rotation_matrix(angles), shift * scale, scale * size, displacement)


def generate_volumes(region: str, seed: int, size: str = "small") -> PhantomVolumes:
    """Generate one case's label map, CT, MR and mask (a pure function of its arguments)."""
    spec = _check(region, size)
    rng = np.random.default_rng(seed)
    canvas = make_canvas(region, spec, rng)
    painters = {"brain": paint_head, "pelvis": paint_pelvis, "hn": paint_neck, "th": paint_trunk, "ab": paint_trunk}
    painters[region](canvas, rng, spec.thin)
    labels = canvas.labels
    del canvas
    hu_mean, hu_texture, mr_relative, mr_texture = draw_table(TISSUES[region], rng)
    texture = tissue_texture(labels, spec.spacing_mm, rng)
    ct = simulate_ct(labels, spec.spacing_mm, hu_mean, hu_texture, texture, rng, noise_hu=rng.uniform(5.0, 12.0))
    mask = body_mask_from_ct(ct, spec.spacing_mm, dilation_mm=round(4.0 * max(spec.scale) ** 0.5))
    ct_hu = np.clip(np.rint(ct), CT_MIN_HU, CT_MAX_HU).astype(np.int16)
    del ct
    reference = rng.uniform(400.0, 1200.0) if region in ("brain", "hn") else rng.uniform(800.0, 2000.0)
    mr = simulate_mr(labels, spec.spacing_mm, mr_relative, mr_texture, texture, rng, reference=reference,
                     noise_fraction=rng.uniform(0.015, 0.04), bias_strength=rng.uniform(0.06, 0.2))
    del texture
    mr_int = np.clip(np.rint(mr), 0, MR_MAX).astype(np.int16)
    del mr
    nz, ny, nx = spec.shape
    dz, dy, dx = (float(s) for s in spec.spacing_mm)
    origin_xyz = (_centred_origin(nx, dx), _centred_origin(ny, dy), _centred_origin(nz, dz))
    return PhantomVolumes(region, int(seed), size, labels, ct_hu, mr_int, mask, (dx, dy, dz), origin_xyz)


def _centred_origin(n_voxels: int, spacing_mm: float) -> float:
    """Origin (mm, rounded to µm) that puts the centre of ``n_voxels`` voxels of ``spacing_mm`` at 0."""
    return round(-(n_voxels - 1) / 2.0 * spacing_mm, 3)


def generate_case(region: str, seed: int, size: str = "small") -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """One paired case as images ``(mr int16, ct int16 HU, mask uint8)`` with identical geometry."""
    volumes = generate_volumes(region, seed, size)
    return volumes.image(volumes.mr), volumes.image(volumes.ct_hu), volumes.image(volumes.mask)
