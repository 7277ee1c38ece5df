"""One case: MR + body mask → synthetic CT (int16 HU, MR geometry), SPEC §2 and §4.

Memory: for an N-voxel MR the peak is about 6 float32 volumes (normalised MR, two blending accumulators, their
temporaries) — a 512×512×160 pelvis (42 M voxels) stays near 1 GB. No float64 copies are made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

from synthct.intensity import denormalise_ct, finalise_sct, normalise_mr
from synthct.io import ImageError, array_to_image, check_same_geometry
from synthct.model_package import ModelPackage
from synthct.sliding_window import sliding_window_predict

log = logging.getLogger(__name__)


def check_inputs(mr_image: sitk.Image, mask_image: sitk.Image, mr_name: str = "MR", mask_name: str = "mask") -> None:
    """Raise :class:`ImageError` if the pair cannot be processed: not 3-D, geometry differs, NaN/inf, empty mask."""
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
    if not np.any(mask > 0):
        raise ImageError(f"{mask_name}: the body mask is empty (no voxel > 0)")


def predict_sct(
    mr_image: sitk.Image,
    mask_image: sitk.Image,
    package: ModelPackage,
    predictor: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    progress: bool = True,
) -> sitk.Image:
    """Synthetic CT for one MR: normalise (package's rule), blended 64³ sliding window, HU, -1000 outside the mask.

    Returns an int16 image with the MR's size, spacing, origin and direction. Windows without a mask voxel are not
    computed. Raises :class:`ImageError` for unusable inputs (see :func:`check_inputs`).
    """
    check_inputs(mr_image, mask_image)
    mask = sitk.GetArrayViewFromImage(mask_image) > 0  # bool (z, y, x)
    normalised = normalise_mr(
        sitk.GetArrayViewFromImage(mr_image), mask, package.mr_rule, package.mr_percentile  # type: ignore[arg-type]
    )
    manifest = package.manifest
    sct_normalised = sliding_window_predict(
        normalised,
        predictor,
        patch_size=package.patch_size,
        overlap=package.overlap,
        mask=mask,
        batch_size=batch_size,
        mode=manifest.get("blend", "gaussian"),
        sigma_scale=float(manifest.get("sigma_scale", 0.125)),
        pad_value=-1.0,
        fill_value=-1.0,
        progress=progress,
    )
    del normalised
    hu = denormalise_ct(sct_normalised)
    del sct_normalised
    sct = finalise_sct(hu, mask)
    del hu
    return array_to_image(sct, mr_image)
