"""One case: MR + body mask → synthetic CT (int16 HU, MR geometry), SPEC §2, §4 and §12.

The network sees the MR in its training geometry (orientation, spacing: :mod:`synthct.geometry`); the sCT is
returned on the MR's own grid.

Memory: for an N-voxel MR the peak is about 6 float32 volumes (normalised MR, two blending accumulators, their
temporaries) — a 512×512×160 pelvis (42 M voxels) stays near 1 GB. No float64 copies are made. The uncertainty
map (``TrustRequest.uncertainty``) adds about 5 float32 volumes (running mean and sum of squares, one member's
prediction, its padded copy, temporaries), ≈ 0.8 GB more for that pelvis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from synthct.geometry import ResampleMode, spacing_zyx_mm, to_mr_grid, to_network_grid
from synthct.intensity import (
    BACKGROUND_HU,
    apply_mr_statistics,
    denormalise_ct,
    finalise_sct,
    mr_statistics,
    normalised_background,
)
from synthct.io import ImageError, array_to_image, check_same_geometry
from synthct.model_package import ModelPackage
from synthct.sliding_window import sliding_window_predict

log = logging.getLogger(__name__)


def check_inputs(mr_image: sitk.Image, mask_image: sitk.Image, mr_name: str = "MR", mask_name: str = "mask") -> None:
    """Raise :class:`ImageError` if the pair cannot be processed: not 3-D, geometry differs, NaN/inf, empty mask, an
    MR without signal (constant or all ≤ 0) inside the mask."""
    for image, name in ((mr_image, mr_name), (mask_image, mask_name)):
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ImageError(f"{name}: expected a single-component 3-D image, got {image.GetDimension()}-D with "
                             f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    check_same_geometry(mr_image, mask_image, mr_name, mask_name)
    mr = sitk.GetArrayViewFromImage(mr_image)
    if np.issubdtype(mr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(mr)))
        if bad:
            raise ImageError(f"{mr_name}: {bad} voxels are NaN or infinite")
    mask = sitk.GetArrayViewFromImage(mask_image)
    body = mask > 0
    if not np.any(body):
        raise ImageError(f"{mask_name}: the body mask is empty (no voxel > 0)")
    seed = mr.flat[int(np.argmax(body))]  # a voxel inside the body: the reductions' start value, in the MR's dtype
    low, high = float(np.min(mr, where=body, initial=seed)), float(np.max(mr, where=body, initial=seed))
    if high == low:  # as the automatic mask refuses an MR without signal (synthct.body_mask.signal_range)
        raise ImageError(f"{mr_name}: the MR has no signal inside the body mask (every voxel is {low:g})")
    if high <= 0:
        raise ImageError(f"{mr_name}: the MR has no positive intensity inside the body mask (maximum {high:g}); "
                         "cannot normalise it")


def predict_sct(
    mr_image: sitk.Image,
    mask_image: sitk.Image,
    package: ModelPackage,
    predictor: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    progress: bool = True,
    resample: ResampleMode = "auto",
) -> sitk.Image:
    """Synthetic CT for one MR (see :func:`predict_case`, which also says what was done to the geometry)."""
    return predict_case(mr_image, mask_image, package, predictor, batch_size, progress, resample)[0]


class OutOfDistributionError(ValueError):
    """A case flagged by the out-of-distribution check while flagged cases are refused (``--refuse-ood``)."""


@dataclass
class TrustRequest:
    """What :func:`predict_case` adds besides the sCT (SPEC §14); its results are filled in by the call."""

    uncertainty: str | None = None
    """A mode of :data:`synthct.trust.UNCERTAINTY_MODES` (None: no uncertainty map)."""
    ood: bool = True
    """Score the case against the package's training record (when it has one)."""
    refuse_ood: bool = False
    """Raise :class:`OutOfDistributionError` for a flagged case, before its inference."""
    region: str | None = None
    """The region the case was declared as (``--region`` / region.json), compared with the record's."""
    uncertainty_image: sitk.Image | None = None
    """Result: float32 HU on the MR's grid, 0 outside the MR's mask."""
    ood_result: dict[str, Any] | None = None
    """Result: :func:`synthct.trust.score_case`'s, or ``{"checked": False, "reason": …}``."""


def normalise_case(mr: np.ndarray, mask: np.ndarray, package: ModelPackage) -> tuple[np.ndarray, float]:
    """(normalised MR, its normalised MR 0) with the package's rule, statistics inside ``mask``: the second is what
    the window engine pads the MR with (:func:`synthct.intensity.normalised_background`)."""
    statistics = mr_statistics(mr, mask, package.mr_rule, package.mr_percentile)
    return apply_mr_statistics(mr, statistics), normalised_background(statistics)


def _ood_check(normalised: np.ndarray, mask: np.ndarray, grid: Any, package: ModelPackage, trust: TrustRequest,
               name: str) -> None:
    from synthct.trust import ood_features, score_case

    record = package.trust
    if record is None:
        trust.ood_result = {"checked": False, "reason": "the model package has no training record (exported "
                            "without it): out-of-distribution check skipped; add it with synthct trust-record"}
        return
    network_spacing = spacing_zyx_mm(grid.mr)
    source_spacing = grid.record.get("mr_spacing_zyx_mm") or network_spacing
    features = ood_features(normalised, mask, network_spacing)
    trust.ood_result = score_case(features, record, source_spacing, trust.region)
    if trust.refuse_ood and trust.ood_result["flagged"]:
        raise OutOfDistributionError(f"{name}: refused as out of distribution (--refuse-ood): "
                                     + "; ".join(trust.ood_result["reasons"]))


def ood_check(mr_image: sitk.Image, mask_image: sitk.Image, package: ModelPackage, region: str | None = None,
              resample: ResampleMode = "auto", name: str = "MR") -> dict[str, Any]:
    """The out-of-distribution result of one case without running the network (what :func:`predict_case` records
    with ``trust``): the MR on the network's grid, normalised, scored against the package's training record."""
    check_inputs(mr_image, mask_image, name)
    grid = to_network_grid(mr_image, mask_image, package.geometry, resample, None, name)
    mask = sitk.GetArrayViewFromImage(grid.mask) > 0
    normalised, _ = normalise_case(sitk.GetArrayViewFromImage(grid.mr), mask, package)
    trust = TrustRequest(region=region)
    _ood_check(normalised, mask, grid, package, trust, name)
    assert trust.ood_result is not None
    return trust.ood_result


def predict_case(
    mr_image: sitk.Image,
    mask_image: sitk.Image,
    package: ModelPackage,
    predictor: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    progress: bool = True,
    resample: ResampleMode = "auto",
    slice_thickness_mm: float | None = None,
    name: str = "MR",
    trust: TrustRequest | None = None,
    tta: int = 1,
    overlap: float | None = None,
) -> tuple[sitk.Image, dict[str, Any]]:
    """Synthetic CT for one MR, and the record of the geometry the network saw.

    ``tta`` (1…8): the sCT is the mean of the plain prediction and ``tta − 1`` mirrored ones
    (:func:`synthct.trust.mirror_members`; 1: the plain prediction alone). ``overlap``: the window engine's overlap
    (None: the package's ``overlap``).

    With ``trust``, the case is also scored against the package's training record (before inference; a flagged
    case raises :class:`OutOfDistributionError` when ``trust.refuse_ood``) and, with ``trust.uncertainty``, the
    test-time-augmentation spread is mapped onto the MR's grid (:mod:`synthct.trust`); both land in ``trust``. The
    sCT is the same with or without them.

    The MR and mask are brought to the package's training geometry (:mod:`synthct.geometry`: axis permutation and
    flips to its orientation; resampling to its spacing when an axis differs by more than its tolerance, unless
    ``resample`` is "never"), normalised (package's rule), predicted with the blended sliding window (the MR padded
    with its normalised MR 0), turned into HU, mapped back onto the MR's own grid, and set to -1000 HU outside the
    MR's mask. Returns an int16 image with the MR's size, spacing, origin and direction. Windows without a mask
    voxel are not computed. Raises :class:`ImageError` for unusable inputs (see :func:`check_inputs`),
    :class:`GeometryError` for an MR that cannot be resampled.
    """
    check_inputs(mr_image, mask_image, name)
    grid = to_network_grid(mr_image, mask_image, package.geometry, resample, slice_thickness_mm, name)
    mask = sitk.GetArrayViewFromImage(grid.mask) > 0  # bool (z, y, x) on the network's grid
    if not mask.any():
        raise ImageError(f"{name}: the body mask is empty on the model's grid (resampled to "
                         f"{grid.record.get('training_spacing_zyx_mm')} mm)")
    normalised, background = normalise_case(sitk.GetArrayViewFromImage(grid.mr), mask, package)
    if trust is not None and trust.ood:
        _ood_check(normalised, mask, grid, package, trust, name)
    manifest = package.manifest
    engine: dict[str, Any] = {
        "patch_size": package.patch_size,
        "overlap": package.overlap if overlap is None else float(overlap),
        "batch_size": batch_size,
        "mode": manifest.get("blend", "gaussian"),
        "sigma_scale": float(manifest.get("sigma_scale", 0.125)),
        "pad_value": background,  # the MR's 0 (air) as normalised: -1 for max/percentile, -mean/std for zscore
        "fill_value": -1.0,
        "progress": progress,
    }
    sct_normalised = sliding_window_predict(normalised, predictor, mask=mask, **engine)
    spread = None
    uncertainty = trust.uncertainty if trust is not None else None
    if tta > 1 or uncertainty:  # one pass over the mirrored/shifted members serves both (synthct.trust)
        from synthct.trust import UNCERTAINTY_MODES, mirror_members, tta_predict

        sct_normalised, spread = tta_predict(normalised, mask, sct_normalised, predictor, mirror_members(tta),
                                             UNCERTAINTY_MODES[uncertainty] if uncertainty else (), **engine)
    del normalised, mask
    hu = to_mr_grid(denormalise_ct(sct_normalised), grid, mr_image, float(BACKGROUND_HU))
    record = grid.record
    del sct_normalised
    body = sitk.GetArrayViewFromImage(mask_image) > 0
    if spread is not None and trust is not None:
        spread_mr = to_mr_grid(spread, grid, mr_image, 0.0)
        spread_mr[~body] = 0.0
        trust.uncertainty_image = array_to_image(spread_mr.astype(np.float32, copy=False), mr_image)
        del spread, spread_mr
    del grid
    sct = finalise_sct(hu, body)
    del hu
    return array_to_image(sct, mr_image), record
