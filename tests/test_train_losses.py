"""Loss terms of eq. 2 and the discriminator's output shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from synthct.train.losses import (
    discriminator_gan_loss,
    generator_gan_loss,
    generator_loss,
    ssim3d,
    ssim_loss,
    voxel_weight,
    weighted_l1,
)
from synthct.train.models import build_discriminator

from synthct.intensity import normalise_ct


def _hu(values: list[float]) -> torch.Tensor:
    return torch.from_numpy(normalise_ct(np.asarray(values, dtype=np.float32)))


def test_paper_weight_is_zero_for_air_and_rises_with_hu() -> None:
    weight = voxel_weight(_hu([-1024, -1000, 0, 40, 1000, 3000]), "paper")
    assert weight[0].item() == pytest.approx(0.0, abs=1e-7)
    assert weight[1].item() == pytest.approx(24 / 4024, abs=1e-6)
    assert torch.all(weight[1:] > weight[:-1])
    assert weight[-1].item() == pytest.approx(1.0)


def test_floor_and_uniform_weights() -> None:
    ct = _hu([-1024, 0, 3000])
    assert torch.allclose(voxel_weight(ct, "uniform"), torch.ones(3))
    floored = voxel_weight(ct, "floor", floor=0.2)
    assert floored[0].item() == pytest.approx(0.2)
    assert floored[2].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown weighting"):
        voxel_weight(ct, "bogus")  # type: ignore[arg-type]


def test_weighted_l1_ignores_errors_in_air_with_paper_weighting() -> None:
    target = torch.full((1, 1, 8, 8, 8), -1.0)  # all air
    prediction = target + 0.5
    assert weighted_l1(prediction, target, "paper").item() == pytest.approx(0.0)
    assert weighted_l1(prediction, target, "uniform").item() == pytest.approx(0.5)
    assert weighted_l1(prediction, target, "floor", floor=0.1).item() == pytest.approx(0.05)


def test_ssim_term_is_zero_for_identical_patches_and_positive_otherwise() -> None:
    generator = torch.Generator().manual_seed(0)
    volume = torch.rand((2, 1, 16, 16, 16), generator=generator) * 2 - 1
    for kernel in ("uniform", "gaussian"):
        assert ssim_loss(volume, volume.clone(), kernel=kernel).item() == pytest.approx(0.0, abs=1e-5)
        noisy = volume + 0.3 * torch.randn(volume.shape, generator=generator)
        assert ssim_loss(noisy, volume, kernel=kernel).item() > 0.1


def test_ssim_matches_skimage_on_the_valid_region() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (14, 15, 16)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1)
    _, full = structural_similarity(a, b, win_size=7, data_range=2.0, full=True)
    expected = full[3:-3, 3:-3, 3:-3].mean()
    got = ssim3d(torch.from_numpy(b)[None, None].float(), torch.from_numpy(a)[None, None].float()).item()
    assert got == pytest.approx(expected, abs=1e-4)


def test_ssim_is_differentiable() -> None:
    target = torch.rand((1, 1, 10, 10, 10)) * 2 - 1
    prediction = torch.zeros_like(target, requires_grad=True)
    ssim_loss(prediction, target).backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()
    assert prediction.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["lsgan", "bce"])
def test_generator_gan_loss_decreases_as_fake_logits_rise(mode: str) -> None:
    values = [generator_gan_loss(torch.full((2, 1, 4, 4, 4), logit), mode).item()  # type: ignore[arg-type]
              for logit in (-2.0, -0.5, 0.0, 0.5, 0.9)]
    assert all(later < earlier for earlier, later in itertools.pairwise(values))


@pytest.mark.parametrize("mode", ["lsgan", "bce"])
def test_discriminator_loss_sign(mode: str) -> None:
    shape = (2, 1, 4, 4, 4)
    right = discriminator_gan_loss(torch.full(shape, 1.0), torch.full(shape, -1.0 if mode == "bce" else 0.0),
                                   mode)  # type: ignore[arg-type]
    wrong = discriminator_gan_loss(torch.full(shape, 0.0 if mode == "lsgan" else -1.0), torch.full(shape, 1.0),
                                   mode)  # type: ignore[arg-type]
    assert right.item() < wrong.item()
    # the discriminator's loss falls as real logits rise and as fake logits fall
    base = discriminator_gan_loss(torch.zeros(shape), torch.zeros(shape) + 0.5, mode)  # type: ignore[arg-type]
    assert discriminator_gan_loss(torch.zeros(shape) + 0.5, torch.zeros(shape) + 0.5, mode) < base  # type: ignore
    assert discriminator_gan_loss(torch.zeros(shape), torch.zeros(shape), mode) < base  # type: ignore[arg-type]
    if mode == "lsgan":
        assert right.item() == pytest.approx(0.0)


def test_generator_loss_combines_the_terms() -> None:
    torch.manual_seed(0)
    target = torch.rand((1, 1, 12, 12, 12)) * 2 - 1
    prediction = (target + 0.1 * torch.randn_like(target)).clamp(-1, 1)
    logits = torch.zeros((1, 1, 2, 2, 2))
    terms = generator_loss(prediction, target, logits, alpha=2.0, lambda_gan=0.5, weighting="paper")
    expected = terms["l1"] + 2.0 * terms["ssim"] + 0.5 * terms["gan"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["gan"].item() == pytest.approx(1.0)  # lsgan: (0 - 1)²
    without_gan = generator_loss(prediction, target, None, alpha=2.0, lambda_gan=0.5)
    assert without_gan["gan"].item() == 0.0
    assert without_gan["total"].item() == pytest.approx((terms["l1"] + 2.0 * terms["ssim"]).item(), rel=1e-6)


def test_masked_l1_plus_ssim_the_resenc_pelvis_loss() -> None:
    """configs/resenc_cpu_smoke_pelvis.yaml: L1 averaged inside the body only, plus alpha·(1 − SSIM) over the whole
    patch; the SSIM term is what tells a prediction that draws a thin bone shell from one that leaves it at soft
    tissue when the shell is a small share of the body's voxels."""
    target = torch.full((1, 1, 16, 16, 16), float(_hu([40.0])[0]))
    target[..., 4:12, 4:12, 7] = float(_hu([1200.0])[0])  # a one-voxel bone plate
    mask = torch.zeros_like(target)
    mask[..., 2:14, 2:14, 2:14] = 1.0
    outside = target.clone()
    outside[mask < 0.5] = -1.0  # errors outside the body only
    terms = generator_loss(outside, target, None, alpha=3.0, lambda_gan=0.0, weighting="uniform", mask=mask)
    assert terms["l1"].item() == pytest.approx(0.0)
    assert terms["ssim"].item() > 0.0  # SSIM stays over the whole patch
    assert terms["total"].item() == pytest.approx(3.0 * terms["ssim"].item(), rel=1e-6)
    # No plate drawn vs the plate drawn at half its contrast: the same masked L1 ...
    no_plate = torch.full_like(target, float(_hu([40.0])[0]))
    half_plate = target.clone()
    half_plate[..., 4:12, 4:12, 7] = float(_hu([620.0])[0])
    half_plate[..., 4:12, 4:12, 6] = float(_hu([620.0])[0])  # blurred into its neighbour
    l1_none = weighted_l1(no_plate, target, "uniform", mask=mask).item()
    l1_half = weighted_l1(half_plate, target, "uniform", mask=mask).item()
    assert l1_half == pytest.approx(l1_none, rel=1e-3)
    # ... but SSIM rewards the drawn structure.
    assert ssim_loss(half_plate, target).item() < 0.5 * ssim_loss(no_plate, target).item()


def test_discriminator_output_shape() -> None:
    discriminator = build_discriminator({"disc_channels": 4, "disc_layers": 3})
    mr = torch.zeros((2, 1, 32, 40, 48))
    logits = discriminator(mr, mr)
    assert logits.shape == (2, 1, 4, 5, 6)
