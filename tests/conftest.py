"""Shared test fixtures: small body-shaped HU volumes and a writer for image files; the rule that the pytest
process never forks a copy of itself (tests/fork_guard.py), checked around every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fork_guard import fork_failure, install, take_forks

BodyCase = tuple[np.ndarray, np.ndarray, np.ndarray]


def body_case(shape: tuple[int, int, int] = (24, 28, 32), seed: int = 0, error_hu: float = 60.0) -> BodyCase:
    """``(ct_hu, sct_hu, mask)`` arrays (z, y, x): an ellipsoid body (soft tissue with a bony core, air outside),
    and a "prediction" = CT + Gaussian noise of ``error_hu`` + a 20 HU offset. float32 HU, uint8 mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    centre = [(n - 1) / 2 for n in shape]
    radius = ((z - centre[0]) / (0.45 * shape[0])) ** 2 + ((y - centre[1]) / (0.42 * shape[1])) ** 2
    radius += ((x - centre[2]) / (0.46 * shape[2])) ** 2
    mask = (radius < 1.0).astype(np.uint8)
    ct = np.where(mask > 0, rng.normal(40.0, 60.0, shape), rng.normal(-1000.0, 15.0, shape))
    ct[radius < 0.25] += 900.0
    sct = ct + rng.normal(20.0, error_hu, shape)
    return ct.astype(np.float32), sct.astype(np.float32), mask


def pytest_configure(config: pytest.Config) -> None:
    """Forkserver as the pytest process's multiprocessing start method, and the fork hook (tests/fork_guard.py)."""
    install()


@pytest.fixture(autouse=True)
def _no_fork_of_the_pytest_process() -> Iterator[None]:
    """Fail the test that forked the pytest process (a child keeping its loaded runtimes' thread pools)."""
    take_forks()
    yield
    forks = take_forks()
    if forks:
        pytest.fail(fork_failure(forks))


@pytest.fixture
def make_body_case() -> Callable[..., BodyCase]:
    """Factory ``make_body_case(shape=(24, 28, 32), seed=0, error_hu=60.0) -> (ct_hu, sct_hu, mask)``."""
    return body_case


def write_image_array(
    array: np.ndarray, path: Path, spacing_mm: tuple[float, ...] = (1.0, 1.0, 2.5), origin_mm: tuple[float, ...] = ()
) -> Path:
    """Write a numpy array ((z, y, x) or (y, x)) as an image; spacing and origin in SimpleITK (x, y, z) order."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_mm[: image.GetDimension()])
    if origin_mm:
        image.SetOrigin(origin_mm[: image.GetDimension()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Writer ``write_image(array, path, spacing_mm=(1, 1, 2.5), origin_mm=()) -> path`` (any SimpleITK format)."""
    return write_image_array
