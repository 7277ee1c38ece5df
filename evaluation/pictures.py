"""Per-case picture: axial, coronal and sagittal slices through the body mask's centre.

Columns: MR (if given), sCT, CT (HU, window −1000…1500) and |sCT − CT| (HU, 0…500, inside the mask); one colour bar
per column; pixel aspect follows the voxel spacing. Rendered with matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from synthct.atomic import atomic_path

HU_WINDOW = (-1000.0, 1500.0)
ERROR_WINDOW = (0.0, 500.0)
VIEWS = ("axial", "coronal", "sagittal")


def mask_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Voxel (z, y, x) at the mask's centre of mass (the volume centre for an empty mask)."""
    indices = np.nonzero(mask)
    if indices[0].size == 0:
        nz, ny, nx = mask.shape
        return (int(nz // 2), int(ny // 2), int(nx // 2))
    iz, iy, ix = indices
    return (round(float(np.mean(iz))), round(float(np.mean(iy))), round(float(np.mean(ix))))


Plane = tuple[np.ndarray, float, str]
"""(2-D slice, pixel aspect = row spacing / column spacing, imshow origin) of one view."""


def _slices(volume: np.ndarray, centre: tuple[int, int, int], spacing_mm: tuple[float, ...]) -> list[Plane]:
    """(2-D slice, pixel aspect = row spacing / column spacing, origin) for each view."""
    z, y, x = centre
    sz, sy, sx = spacing_mm
    return [
        (volume[z], sy / sx, "upper"),  # rows y (anterior→posterior), columns x
        (volume[:, y, :], sz / sx, "lower"),  # rows z (superior up), columns x
        (volume[:, :, x], sz / sy, "lower"),  # rows z, columns y
    ]


def _mr_window(mr: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    values = mr[mask > 0] if np.any(mask > 0) else mr.ravel()
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def case_figure(
    case_id: str,
    ct_hu: np.ndarray,
    sct_hu: np.ndarray,
    mask: np.ndarray,
    spacing_mm: tuple[float, ...],
    mr: np.ndarray | None = None,
    scores: dict[str, Any] | None = None,
) -> Figure:
    """The case's figure (rows: views; columns: [MR], sCT, CT, |sCT − CT|). Arrays (z, y, x), spacing (z, y, x) mm."""
    centre = mask_centre(mask)
    sct_planes = _slices(sct_hu, centre, spacing_mm)
    ct_planes = _slices(ct_hu, centre, spacing_mm)
    error_planes = []
    for (sct_plane, aspect, origin), (ct_plane, _, _), (mask_plane, _, _) in zip(
        sct_planes, ct_planes, _slices(mask, centre, spacing_mm), strict=True
    ):
        error = np.abs(sct_plane.astype(np.float32) - ct_plane.astype(np.float32))
        error[mask_plane == 0] = np.nan
        error_planes.append((error, aspect, origin))
    columns: list[tuple[str, list[Plane], str, tuple[float, float], str]] = []
    if mr is not None:
        columns.append(("MR", _slices(mr, centre, spacing_mm), "gray", _mr_window(mr, mask), "MR intensity"))
    columns += [
        ("sCT", sct_planes, "gray", HU_WINDOW, "HU"),
        ("CT", ct_planes, "gray", HU_WINDOW, "HU"),
        ("|sCT − CT|", error_planes, "inferno", ERROR_WINDOW, "HU (inside mask)"),
    ]
    # row heights follow each view's physical height / width, so that panels fill their cells
    nz, ny, nx = ct_hu.shape
    sz, sy, sx = spacing_mm
    ratios = [(ny * sy) / (nx * sx), (nz * sz) / (nx * sx), (nz * sz) / (ny * sy)]
    ratios = [min(max(r, 0.25), 4.0) for r in ratios]
    width = 3.3
    figure = Figure(figsize=(width * len(columns), width * sum(ratios) + 1.6), layout="constrained")
    axes = figure.subplots(len(VIEWS), len(columns), squeeze=False, gridspec_kw={"height_ratios": ratios})
    for col, (title, planes, cmap, (vmin, vmax), unit) in enumerate(columns):
        image = None
        for row, (plane, aspect, origin) in enumerate(planes):
            ax = axes[row, col]
            image = ax.imshow(
                plane, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, origin=origin, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
            if col == 0:
                ax.set_ylabel(VIEWS[row])
            ax.set_facecolor("black")
        assert image is not None  # every column has its three views
        bar = figure.colorbar(
            image,
            ax=list(axes[:, col]),
            orientation="horizontal",
            fraction=0.04,
            pad=0.02,
            extend="both" if col < len(columns) - 1 else "max",
        )
        bar.set_label(unit)
    figure.suptitle(f"{case_id}   " + _scores_text(scores) + f"   (slices z={centre[0]}, y={centre[1]}, x={centre[2]})")
    return figure


def _scores_text(scores: dict[str, Any] | None) -> str:
    if not scores:
        return ""
    parts = []
    for key, fmt in (
        ("mae", "MAE {:.1f} HU"),
        ("psnr", "PSNR {:.2f} dB"),
        ("ssim", "SSIM {:.4f}"),
        ("ms_ssim", "MS-SSIM {:.4f}"),
    ):
        if scores.get(key) is not None:
            parts.append(fmt.format(scores[key]))
    return ", ".join(parts)


def save_case_picture(path: str | os.PathLike[str], figure: Figure, dpi: int = 90) -> Path:
    """Write the figure as PNG atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    return path
