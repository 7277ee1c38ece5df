"""Dose picture of one case and modality: dose on CT and on sCT, their difference in three planes, DVH curves.

Rows: axial, coronal, sagittal planes through the PTV centre. Columns: CT with its plan dose (Gy, shown above 10 %
Rx), sCT with the recalculated dose, sCT − CT dose (% Rx, inside the body). Bottom: cumulative DVHs, CT solid and
sCT dashed. CT/sCT in HU (−1000…1500) on the CT grid, doses on the dose grid, placed by their mm coordinates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from synthct.evaluation.dose.dose_metrics import cumulative_dvh
from synthct.evaluation.dose.planning import PlanResult

from synthct.atomic import atomic_path

HU_WINDOW = (-1000.0, 1500.0)
VIEWS = ("axial", "coronal", "sagittal")
COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def _plane(volume: np.ndarray, view: int, index: int) -> np.ndarray:
    return (volume[index], volume[:, index, :], volume[:, :, index])[view]


def _extent(view: int, shape: tuple[int, ...], spacing: tuple[float, ...], origin: tuple[float, ...]
            ) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in mm of a plane; axial rows y downwards, others z upwards."""
    rows, cols = ((1, 2), (0, 2), (0, 1))[view]

    def span(axis: int) -> tuple[float, float]:
        return origin[axis] - spacing[axis] / 2, origin[axis] + (shape[axis] - 0.5) * spacing[axis]

    (c0, c1), (r0, r1) = span(cols), span(rows)
    return (c0, c1, r1, r0) if view == 0 else (c0, c1, r0, r1)


def dose_figure(
    case_id: str,
    modality: str,
    ct_hu: np.ndarray,
    sct_hu: np.ndarray,
    spacing_mm: tuple[float, ...],
    plan: PlanResult,
    prescription_gy: float,
    scores: dict[str, Any],
) -> Figure:
    """The figure described in the module docstring; CT/sCT arrays (z, y, x) on the CT grid with ``spacing_mm``."""
    grid = plan.grid
    centre_idx = np.argwhere(plan.ptv).mean(axis=0)
    centre_mm = np.asarray(grid.origin_mm) + centre_idx * np.asarray(grid.spacing_mm)
    ct_index = [
        int(np.clip(round(c / s), 0, n - 1)) for c, s, n in zip(centre_mm, spacing_mm, ct_hu.shape, strict=True)
    ]
    dose_index = [int(np.clip(round(c), 0, n - 1)) for c, n in zip(centre_idx, grid.shape, strict=True)]
    difference = np.where(plan.body, 100.0 * (plan.sct_gy - plan.ct_gy) / prescription_gy, np.nan)
    limit = max(2.0, float(np.nanpercentile(np.abs(difference), 99.5)) if np.any(plan.body) else 2.0)
    dose_max = 1.1 * float(max(plan.ct_gy.max(), plan.sct_gy.max()))
    figure = Figure(figsize=(12.5, 15.5), layout="constrained")
    grid_spec = figure.add_gridspec(4, 3, height_ratios=[1, 1, 1, 1.1])
    zeros3 = (0.0, 0.0, 0.0)
    images: dict[int, AxesImage] = {}
    for view in range(3):
        for column, (anatomy, dose) in enumerate(((ct_hu, plan.ct_gy), (sct_hu, plan.sct_gy), (None, difference))):
            ax = figure.add_subplot(grid_spec[view, column])
            ax.set_facecolor("black")
            if anatomy is not None:
                ax.imshow(_plane(anatomy, view, ct_index[view]), cmap="gray", vmin=HU_WINDOW[0], vmax=HU_WINDOW[1],
                          extent=_extent(view, anatomy.shape, spacing_mm, zeros3), interpolation="nearest")
                shown = np.ma.masked_less(_plane(dose, view, dose_index[view]), 0.1 * prescription_gy)
                images[column] = ax.imshow(shown, cmap="jet", alpha=0.5, vmin=0.0, vmax=dose_max,
                                           extent=_extent(view, grid.shape, grid.spacing_mm, grid.origin_mm),
                                           interpolation="bilinear")
            else:
                dose_extent = _extent(view, grid.shape, grid.spacing_mm, grid.origin_mm)
                images[column] = ax.imshow(_plane(dose, view, dose_index[view]), cmap="RdBu_r", vmin=-limit,
                                           vmax=limit, extent=dose_extent, interpolation="nearest")
            ct_extent = _extent(view, ct_hu.shape, spacing_mm, zeros3)
            ax.set_xlim(ct_extent[0], ct_extent[1])
            ax.set_ylim(ct_extent[2], ct_extent[3])
            ax.set_xticks([])
            ax.set_yticks([])
            if view == 0:
                ax.set_title(("CT + plan dose", "sCT + recalculated dose", "sCT − CT dose")[column])
            if column == 0:
                ax.set_ylabel(VIEWS[view])
    for column, label in enumerate(("Gy", "Gy", "% of prescription")):
        figure.colorbar(images[column], ax=figure.axes[column::3], orientation="horizontal", fraction=0.04,
                        pad=0.01, label=label)
    ax = figure.add_subplot(grid_spec[3, :])
    bins = np.linspace(0.0, dose_max, 200)
    for colour, (name, mask) in zip(COLOURS, [("PTV", plan.ptv), *plan.oars.items()], strict=False):
        ax.plot(bins, cumulative_dvh(plan.ct_gy, mask, bins), color=colour, label=f"{name} CT")
        ax.plot(bins, cumulative_dvh(plan.sct_gy, mask, bins), color=colour, linestyle="--", label=f"{name} sCT")
    ax.axvline(prescription_gy, color="gray", linewidth=0.8)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(ncol=3, fontsize="small")
    figure.suptitle(
        f"{case_id} {modality}: dose MAE {scores['dose_mae_pct']:.2f} % Rx, gamma 2%/2mm "
        f"{scores['gamma_pass_pct']:.1f} %, PTV D98 diff {scores['dvh_diff_pct']['ptv_d98_diff_pct']:+.2f} % Rx"
    )
    return figure


def save_dose_picture(path: str | os.PathLike[str], figure: Figure, dpi: int = 80) -> Path:
    """Write the figure as PNG atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    return path
