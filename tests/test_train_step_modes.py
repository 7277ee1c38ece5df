"""The faster-step switches give the same training: torch.compile (and its fallback), channels-last-3d.

Behaviour only: how much faster they are is measured in benchmarks/bench_train.py, not asserted here."""

from __future__ import annotations

import pytest
import torch
from synthct.train.config import config_from_dict
from synthct.train.models import PatchDiscriminator
from synthct.train.step import StepModels, compile_models, train_step
from torch import nn


def _models(channels_last: bool = False) -> StepModels:
    """A small conv generator and the project's PatchGAN (compiling SwinUNETR on 2 CPU cores takes many minutes)."""
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(4, 1, 3, padding=1),
                              nn.Tanh())
    discriminator = PatchDiscriminator(base_channels=4, n_layers=2)
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last_3d)
        discriminator = discriminator.to(memory_format=torch.channels_last_3d)
    optimizer_g = torch.optim.AdamW(generator.parameters(), lr=1e-3)
    optimizer_d = torch.optim.AdamW(discriminator.parameters(), lr=1e-3)
    return StepModels(generator, discriminator, generator, discriminator, optimizer_g, optimizer_d,
                      torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), None,
                      channels_last=channels_last)


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(n):
        mr = torch.rand(2, 1, 16, 16, 16, generator=generator) * 2 - 1
        batches.append((mr, torch.tanh(-mr * 0.8 + 0.1)))
    return batches


def _losses(models: StepModels, steps: int = 3) -> list[dict[str, float]]:
    config = config_from_dict({"loss": {"lambda_gan": 0.1}})
    out = []
    for mr, ct in _batches(steps):
        if models.channels_last:
            mr, ct = (t.contiguous(memory_format=torch.channels_last_3d) for t in (mr, ct))
        out.append(train_step(models, mr, ct, config, use_gan=True))
    return out


def _assert_close(a: list[dict[str, float]], b: list[dict[str, float]], tolerance: float) -> None:
    for step_a, step_b in zip(a, b, strict=True):
        for key in ("l1", "ssim", "gan", "total", "d"):
            assert step_a[key] == pytest.approx(step_b[key], rel=tolerance, abs=tolerance), key


@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses() -> None:
    eager = _losses(_models())
    models = _models()
    compile_models(models, "default")
    assert models.compiled == "default" and models.generator_train is not models.generator
    compiled = _losses(models)
    assert models.compiled == "default"  # no fallback happened
    _assert_close(compiled, eager, 1e-4)
    # the eager modules (checkpoints, validation) hold the trained weights
    assert not any(name.startswith("_orig_mod") for name in models.generator.state_dict())


def test_a_failing_compiled_step_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    eager = _losses(_models())
    models = _models()

    class Broken(nn.Module):
        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("backend compiler failed: no C compiler")

    models.generator_train = Broken()
    models.compiled = "default"
    with caplog.at_level("WARNING"):
        fallen_back = _losses(models)
    assert models.compiled == "off" and models.generator_train is models.generator
    assert "falling back to eager" in caplog.text
    _assert_close(fallen_back, eager, 1e-6)


def test_channels_last_gives_the_same_losses() -> None:
    _assert_close(_losses(_models(channels_last=True)), _losses(_models()), 1e-4)


def test_restore_utf8_ctype_undoes_a_c_locale() -> None:
    """ITK may reset LC_CTYPE to C in-process; torch.compile then fails reading its templates as ASCII."""
    import locale

    from synthct.train.process import restore_utf8_ctype

    before = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        assert locale.getpreferredencoding(False).lower().replace("-", "") != "utf8"
        restore_utf8_ctype()
        assert locale.getpreferredencoding(False).lower().replace("-", "") == "utf8"
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
