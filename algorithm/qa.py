"""QA page for ``synthct predict``: per case ``OUT/qa/<case id>.png`` and one ``OUT/qa/index.html``.

The page lists the cases of every run into the same folder (its rows are kept in ``OUT/qa/index.json``; a redone case
replaces its row): :func:`merge_qa_rows`.

The picture shows three planes through the body's centre (voxel-index planes: axial k, coronal j, sagittal i) —
the MR with the mask outline, and the sCT in colour over the MR with an HU colour bar. The page has one row per
case: the picture, an HU histogram inside the mask and flags worth a look before the sCT goes to planning:

- ``body touches the FOV border``: tissue (> -400 HU) inside the body mask reaches the in-plane edge of the image (a
  truncated body gives a wrong external contour and wrong depths; the mask's air margin alone does not count);
- ``air inside the body``: more than the region's ``AIR_LIMIT`` of the body's core (mask eroded by 20 mm
  in-plane) below -400 HU;
- ``bone fraction``: the fraction of mask voxels above 250 HU outside the region's usual range (``BONE_RANGE``);
- ``MR outliers``: the MR's maximum inside the mask above ``MR_OUTLIER_RATIO`` × its 99.5th percentile (the
  paper's max normalisation scales the whole MR by that maximum).

No torch; matplotlib is imported only when a picture is drawn. Files are written atomically.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from synthct.atomic import atomic_path, write_json_atomic, write_text_atomic
from synthct.geometry import canonical_reorientation

AIR_HU, BONE_HU = -400.0, 250.0
AIR_LIMIT: dict[str, float] = {"brain": 0.08, "pelvis": 0.08, "hn": 0.12, "th": 0.65, "ab": 0.25}
"""Largest fraction of the body's core below -400 HU before the flag, by region. On true CTs
(``benchmarks/qa_calibration.py``): brain and pelvis phantoms and the real head CT 1.1–4.4 % (sinuses, bowel gas;
limit 8 %, room for real bowel gas); head-and-neck phantoms 5.4–6.0 % (airway, sinuses; 12 %); thorax 37–46 %
(the lungs are in the body; 65 %: a thorax much darker than that has lost its soft tissue); abdomen 9.4–12.6 %
(bowel and stomach gas, lung bases; 25 %)."""
DEFAULT_AIR_LIMIT = 0.08
CORE_EROSION_MM = 20.0
BONE_RANGE: dict[str, tuple[float, float]] = {
    "brain": (0.06, 0.35), "hn": (0.04, 0.30), "pelvis": (0.015, 0.25), "th": (0.02, 0.20), "ab": (0.02, 0.20),
}
"""Usual fraction of body voxels above 250 HU by region: true CTs inside the automatic mask measured 13–15 % (brain
phantoms, real head CT) and 2.9–3.8 % (small pelvis phantoms) in ``benchmarks/qa_calibration.py``; the ranges are
wide around those (anatomy and field of view vary)."""
MR_OUTLIER_RATIO = 2.5
HISTOGRAM_EDGES = np.arange(-1025.0, 3001.0, 50.0)
PICTURE_WINDOW_HU = (-1000.0, 2000.0)
UNCERTAINTY_WINDOW_HU = 50.0
"""The uncertainty picture's colour scale runs from 0 to this (HU) or the map's 99th percentile, if higher."""
INDEX_RECORD = "index.json"
"""The QA page's rows, kept beside ``index.html`` so that a later run into the same folder merges with them."""


def case_statistics(sct_hu: np.ndarray, mask: np.ndarray, mr: np.ndarray, spacing_zyx_mm: tuple[float, ...],
                    region: str) -> dict[str, Any]:
    """Figures and flags for one case; arrays (z, y, x), ``sct_hu`` in HU, ``mask`` > 0 is the body."""
    body = np.asarray(mask) > 0
    n_body = int(body.sum())
    if n_body == 0:
        return {"flags": ["empty body mask"], "histogram": [0] * (len(HISTOGRAM_EDGES) - 1)}
    inside = np.asarray(sct_hu)[body].astype(np.float32)
    flags: list[str] = []
    border = np.zeros(body.shape, dtype=bool)
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    at_border = int(np.count_nonzero(body & border & (np.asarray(sct_hu) > AIR_HU)))
    if at_border:
        flags.append(f"body touches the FOV border ({at_border} in-plane edge voxels of tissue in the mask)")
    core = np.zeros_like(body)
    for z in np.nonzero(body.any(axis=(1, 2)))[0]:
        core[z] = ndimage.distance_transform_edt(body[z], sampling=spacing_zyx_mm[1:]) > CORE_EROSION_MM
    air_fraction = float(np.mean(np.asarray(sct_hu)[core] < AIR_HU)) if core.any() else 0.0
    air_limit = AIR_LIMIT.get(region, DEFAULT_AIR_LIMIT)
    if air_fraction > air_limit:
        flags.append(f"air inside the body: {100 * air_fraction:.1f} % of the core below {AIR_HU:g} HU "
                     f"(limit {100 * air_limit:g} % for {region})")
    bone_fraction = float(np.mean(inside > BONE_HU))
    low, high = BONE_RANGE.get(region, (0.0, 1.0))
    if not low <= bone_fraction <= high:
        flags.append(f"bone fraction {100 * bone_fraction:.1f} % outside the usual {100 * low:g}–{100 * high:g} % "
                     f"for {region}")
    mr_inside = np.asarray(mr)[body].astype(np.float32)
    p995 = float(np.percentile(mr_inside, 99.5))
    mr_max = float(mr_inside.max())
    if p995 > 0 and mr_max > MR_OUTLIER_RATIO * p995:
        n_out = int(np.count_nonzero(mr_inside > MR_OUTLIER_RATIO * p995))
        flags.append(f"MR outliers: maximum {mr_max:.4g} is {mr_max / p995:.1f} × the 99.5th percentile "
                     f"({n_out} voxels above {MR_OUTLIER_RATIO:g} ×)")
    histogram, _ = np.histogram(np.clip(inside, HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1] - 1), HISTOGRAM_EDGES)
    return {
        "body_voxels": n_body,
        "mean_hu": round(float(inside.mean()), 1),
        "bone_fraction": round(bone_fraction, 4),
        "air_fraction_core": round(air_fraction, 4),
        "mr_max_over_p995": round(mr_max / p995, 3) if p995 > 0 else None,
        "flags": flags,
        "histogram": [int(v) for v in histogram],
    }


def body_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Voxel index (z, y, x) of the mask's centre of mass (the volume centre for an empty mask)."""
    body = np.asarray(mask) > 0
    if not body.any():
        nz, ny, nx = body.shape
        return (nz // 2, ny // 2, nx // 2)
    cz, cy, cx = ndimage.center_of_mass(body)
    return (round(cz), round(cy), round(cx))


def draw_case(path: Path, case_id: str, mr: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray,
              spacing_zyx_mm: tuple[float, ...], subtitle: str = "", uncertainty_hu: np.ndarray | None = None) -> Path:
    """Write the case picture (PNG) atomically: MR + mask outline (top), sCT over MR + HU colour bar (middle)
    and, with ``uncertainty_hu`` (z, y, x, HU), the uncertainty map over the MR with its colour bar (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z, y, x = body_centre(mask)
    sz, sy, sx = spacing_zyx_mm
    planes: list[tuple[str, tuple[int | slice, int | slice, int | slice], float, str]] = [
        (f"axial k={z}", np.s_[z, :, :], sy / sx, "upper"),
        (f"coronal j={y}", np.s_[:, y, :], sz / sx, "lower"),
        (f"sagittal i={x}", np.s_[:, :, x], sz / sy, "lower")]
    body = np.asarray(mask) > 0
    mr_max = float(np.percentile(mr[body], 99.5)) if body.any() else float(np.max(mr)) or 1.0
    rows = 2 if uncertainty_hu is None else 3
    figure, axes = plt.subplots(rows, 3, figsize=(13, 4.2 * rows), gridspec_kw={"hspace": 0.12, "wspace": 0.04})
    overlay = spread = None
    spread_top = UNCERTAINTY_WINDOW_HU
    if uncertainty_hu is not None and body.any():
        spread_top = max(UNCERTAINTY_WINDOW_HU, float(np.percentile(uncertainty_hu[body], 99)))
    for column, (title, index, aspect, origin) in enumerate(planes):
        mr_plane, body_plane = mr[index], body[index]
        sct_plane = np.ma.masked_where(~body_plane, sct_hu[index])
        for row in range(rows):
            ax = axes[row, column]
            ax.imshow(mr_plane, cmap="gray", vmin=0, vmax=mr_max, aspect=aspect, origin=origin,
                      interpolation="nearest")
            if row == 1:
                overlay = ax.imshow(sct_plane, cmap="turbo", vmin=PICTURE_WINDOW_HU[0], vmax=PICTURE_WINDOW_HU[1],
                                    alpha=0.75, aspect=aspect, origin=origin, interpolation="nearest")
            if row == 2 and uncertainty_hu is not None:
                spread = ax.imshow(np.ma.masked_where(~body_plane, uncertainty_hu[index]), cmap="magma", vmin=0.0,
                                   vmax=spread_top, alpha=0.8, aspect=aspect, origin=origin, interpolation="nearest")
            if body_plane.any() and not body_plane.all():
                # no origin here: contour follows the axes imshow set up (origin="upper" would flip it again)
                ax.contour(body_plane, levels=[0.5], colors="yellow" if row == 0 else "white", linewidths=0.9)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=10)
    axes[0, 0].set_ylabel("MR + body mask", fontsize=10)
    axes[1, 0].set_ylabel("sCT over MR", fontsize=10)
    if overlay is not None:
        bar = figure.colorbar(overlay, ax=list(axes[1, :]), fraction=0.025, pad=0.01)
        bar.set_label("HU")
    if spread is not None:
        axes[2, 0].set_ylabel("uncertainty over MR", fontsize=10)
        bar = figure.colorbar(spread, ax=list(axes[2, :]), fraction=0.025, pad=0.01)
        bar.set_label("uncertainty (HU, std)")
    figure.suptitle(f"{case_id}  {subtitle}".strip(), fontsize=12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def qa_case(case_id: str, region: str, mr_image: sitk.Image, sct_image: sitk.Image, mask_image: sitk.Image,
            qa_dir: Path, auto_mask: bool = False, uncertainty: sitk.Image | None = None) -> dict[str, Any]:
    """Figures, flags and ``qa_dir/<case id>.png`` for one case; returns its row for :func:`write_qa_index`.
    ``uncertainty``: the uncertainty map (HU, MR grid), drawn as a third row of the picture.

    The images are first reoriented to LPS (axis permutation only, :mod:`synthct.geometry`), so the pictures show
    true transverse / coronal / sagittal planes and "in-plane" means transverse, however the MR was stored.
    """
    reorientation = canonical_reorientation(mr_image)
    mr_image, sct_image, mask_image = (reorientation.apply_to_image(image)
                                       for image in (mr_image, sct_image, mask_image))
    spread = None if uncertainty is None else \
        sitk.GetArrayFromImage(reorientation.apply_to_image(uncertainty))  # a copy: the image is a temporary
    mr = sitk.GetArrayViewFromImage(mr_image)
    sct = sitk.GetArrayViewFromImage(sct_image)
    mask = sitk.GetArrayViewFromImage(mask_image)
    spacing_zyx = tuple(float(s) for s in mr_image.GetSpacing()[::-1])
    stats = case_statistics(sct, mask, mr, spacing_zyx, region)
    size = "×".join(str(n) for n in mr_image.GetSize())
    spacing = "×".join(f"{s:.3g}" for s in mr_image.GetSpacing())
    subtitle = f"({region}; {size} voxels, {spacing} mm; {'automatic' if auto_mask else 'given'} mask)"
    picture = draw_case(Path(qa_dir) / f"{case_id}.png", case_id, mr, sct, mask, spacing_zyx, subtitle, spread)
    return {"case_id": case_id, "region": region, "auto_mask": auto_mask, "picture": picture.name,
            "size": size, "spacing_mm": spacing, **stats}


def _histogram_svg(counts: list[int], width: int = 260, height: int = 90) -> str:
    """Inline SVG of an HU histogram (bins of :data:`HISTOGRAM_EDGES`, square-root height so small peaks show)."""
    values = np.sqrt(np.asarray(counts, dtype=float))
    top = float(values.max()) or 1.0
    n = len(values)
    bar = width / n
    lo, hi = HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1]
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 14 - v / top * (height - 18):.1f}" width="{bar:.2f}" '
        f'height="{v / top * (height - 18):.1f}" fill="{_bar_colour(HISTOGRAM_EDGES[i])}"/>'
        for i, v in enumerate(values) if v > 0)
    ticks = "".join(
        f'<line x1="{(t - lo) / (hi - lo) * width:.1f}" y1="{height - 14}" x2="{(t - lo) / (hi - lo) * width:.1f}" '
        f'y2="{height - 10}" stroke="#444"/><text x="{(t - lo) / (hi - lo) * width:.1f}" y="{height - 1}" '
        f'font-size="9" text-anchor="middle">{t}</text>'
        for t in (-1000, 0, 1000, 2000, 3000))
    pad = 16  # room for the outer tick labels
    return (f'<svg width="{width + 2 * pad}" height="{height}" viewBox="0 0 {width + 2 * pad} {height}" role="img" '
            f'aria-label="HU histogram inside the mask"><g transform="translate({pad},0)"><line x1="0" '
            f'y1="{height - 14}" x2="{width}" y2="{height - 14}" stroke="#444"/>{bars}{ticks}</g></svg>')


def _trust_html(row: dict[str, Any]) -> str:
    """The figures column's lines on the out-of-distribution score and the uncertainty map (empty when absent)."""
    parts = []
    ood = row.get("ood")
    if isinstance(ood, dict) and ood.get("checked"):
        verdict = '<span class="flag">out of distribution</span>' if ood.get("flagged") else \
            '<span class="ok">in distribution</span>'
        parts.append(f'OOD score {ood["score"]:.1f} (limit {ood["threshold"]:.1f}): {verdict}')
    elif isinstance(ood, dict):
        parts.append("OOD check: not done (package without training record)")
    unc = row.get("uncertainty")
    if isinstance(unc, dict) and unc.get("mean_hu") is not None:
        limit = f', limit {unc["limit_hu"]:g}' if unc.get("limit_hu") is not None else ", not calibrated"
        parts.append(f'uncertainty ({html.escape(str(unc["mode"]))}): mean {unc["mean_hu"]:g} HU, '
                     f'p95 {unc["p95_hu"]:g} HU{limit}')
    return "".join(f"<br>{p}" for p in parts)


def _bar_colour(hu: float) -> str:
    return "#6a8caf" if hu < AIR_HU else "#c9a227" if hu > BONE_HU else "#b56576"


def merge_qa_rows(rows: list[dict[str, Any]], qa_dir: Path) -> list[dict[str, Any]]:
    """This run's rows merged per case with the earlier runs' (``qa_dir/index.json``), sorted by case id.

    An earlier row is kept when this run did not redo its case and its picture is still there (failed rows too);
    an unreadable ``index.json`` is ignored with a warning.
    """
    import json
    import logging

    previous: list[Any] = []
    record = Path(qa_dir) / INDEX_RECORD
    if record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
            if not isinstance(previous, list):
                raise ValueError("not a list of rows")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logging.getLogger(__name__).warning("%s: earlier QA rows not readable (%s); not kept", record, exc)
            previous = []
    done = {row["case_id"] for row in rows}
    kept = [row for row in previous if isinstance(row, dict) and isinstance(row.get("case_id"), str)
            and row["case_id"] not in done
            and ("picture" not in row or (Path(qa_dir) / str(row["picture"])).is_file())]
    return sorted(kept + rows, key=lambda row: row["case_id"])


def write_qa_index(rows: list[dict[str, Any]], qa_dir: Path, merge: bool = True) -> Path:
    """Write ``qa_dir/index.html`` (one table row per case, failed cases with their error) atomically.

    ``merge``: the cases of earlier runs into the same folder are kept (:func:`merge_qa_rows`); the rows are
    recorded in ``qa_dir/index.json`` for the next run.
    """
    qa_dir = Path(qa_dir)
    if merge:
        rows = merge_qa_rows(rows, qa_dir)
        write_json_atomic(qa_dir / INDEX_RECORD, rows)
    lines = []
    for row in rows:
        case = html.escape(row["case_id"])
        if "error" in row and "picture" not in row:
            lines.append(f'<tr class="failed"><td>{case}</td><td colspan="4" class="flag">failed: '
                         f'{html.escape(row["error"])}</td></tr>')
            continue
        picture = html.escape(row["picture"])
        flags = row["flags"]
        flag_html = ("<ul>" + "".join(f'<li class="flag">{html.escape(f)}</li>' for f in flags) + "</ul>"
                     if flags else '<span class="ok">no flags</span>')
        figures = (f'{html.escape(row["region"])}, {"automatic" if row["auto_mask"] else "given"} mask<br>'
                   f'{html.escape(row["size"])} voxels, {html.escape(row["spacing_mm"])} mm<br>'
                   f'mean {row["mean_hu"]:g} HU<br>bone (&gt;{BONE_HU:g} HU) {100 * row["bone_fraction"]:.1f} %<br>'
                   f'air in core {100 * row["air_fraction_core"]:.1f} %'
                   + (f'<br><span class="geometry">network grid: {html.escape(row["geometry"])}</span>'
                      if row.get("geometry") else "") + _trust_html(row))
        lines.append(f'<tr><td>{case}</td><td><a href="{picture}"><img src="{picture}" alt="{case}" '
                     f'width="360"></a></td><td>{_histogram_svg(row["histogram"])}</td><td>{figures}</td>'
                     f"<td>{flag_html}</td></tr>")
    n_flagged = sum(1 for r in rows if r.get("flags") or "error" in r)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>synthct QA</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 6px 8px; vertical-align: top; text-align: left; font-size: 13px; }}
th {{ background: #eee; }}
.flag {{ color: #b00020; }} .ok {{ color: #2e7d32; }} ul {{ margin: 0; padding-left: 1.1em; }}
tr.failed td {{ background: #fdecea; }}
</style></head><body>
<h1>synthct QA — {len(rows)} case(s), {n_flagged} flagged or failed</h1>
<p>Pictures: MR with the body mask (top), sCT over MR in HU (second row), planes through the body's centre.
Histogram: sCT HU inside the body mask (square-root counts; blue air &lt; {AIR_HU:g} HU, red soft tissue, yellow bone
&gt; {BONE_HU:g} HU). Flags: body (tissue in the mask) at the FOV border; air in the body's core (mask eroded
{CORE_EROSION_MM:g} mm) above the region's limit (brain, pelvis {100 * AIR_LIMIT["brain"]:g} %; lungs and bowel gas
allowed for in thorax and abdomen); bone fraction outside the region's usual range; MR maximum above
{MR_OUTLIER_RATIO:g} × its 99.5th percentile. With <code>--uncertainty</code> a third picture row shows the
uncertainty map (spread of the sCT over test-time augmentations, HU) over the MR. Out of distribution: the MR is
unlike the model's training cases (contrast, intensities, bias field, signal void, field of view, body size, spacing,
region), each flag with its reason. Neither says the sCT is right when unflagged; see the README's
"Trust outputs".</p>
<table><tr><th>case</th><th>picture</th><th>HU histogram (in mask)</th><th>figures</th><th>flags</th></tr>
{chr(10).join(lines)}
</table></body></html>
"""
    target = qa_dir / "index.html"
    write_text_atomic(target, page)
    return target
