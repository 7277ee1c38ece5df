"""Generators (MONAI SwinUNETR, or the residual-encoder U-Net of :mod:`synthct.train.resenc`; both end in tanh:
normalised CT in -1…1) and the conditional 3D PatchGAN discriminator.

Tensors are (batch, channel, z, y, x). The networks are built from the ``model`` section of the training config
(``model.architecture`` picks the generator), so a checkpoint (which stores that config) rebuilds exactly the
network it holds; :func:`state_architecture` tells from a state dict's keys which generator it belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from synthct.train.resenc import ResEncUNet
from torch import nn

ARCHITECTURES = ("swinunetr", "resenc_unet")
"""Values of ``model.architecture``."""
DEFAULT_ARCHITECTURE = "swinunetr"


class ArchitectureError(ValueError):
    """An unknown ``model.architecture``, or weights of one generator offered to the other (names both)."""


class Generator(nn.Module):
    """SwinUNETR (1 → 1 channel) followed by tanh: normalised MR in, normalised CT in [-1, 1] out.

    Input and output: (B, 1, z, y, x) with every spatial size a multiple of 32.
    """

    def __init__(self, feature_size: int = 24, depths: tuple[int, ...] = (2, 2, 2, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), use_v2: bool = False,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        self.net = SwinUNETR(
            in_channels=1,
            out_channels=1,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            use_v2=use_v2,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
        )

    def forward(self, mr: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(mr))


class PatchDiscriminator(nn.Module):
    """Conditional 3D PatchGAN: input MR ⊕ CT (B, 2, z, y, x), output logits (B, 1, z/8, y/8, x/8).

    Three stride-2 convolutions and two stride-1 ones, as pix2pix's 70×70 PatchGAN in 3-D, with instance norm
    and LeakyReLU(0.2).
    """

    def __init__(self, base_channels: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv3d(2, base_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = base_channels
        for index in range(1, n_layers):
            out_channels = base_channels * min(2**index, 8)
            layers += [
                nn.Conv3d(channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.InstanceNorm3d(out_channels, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out_channels
        out_channels = base_channels * min(2**n_layers, 8)
        layers += [
            nn.Conv3d(channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(out_channels, 1, kernel_size=3, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, mr: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([mr, ct], dim=1))


def architecture_of(model_config: Mapping[str, Any]) -> str:
    """``model.architecture`` of a config's ``model`` section (default swinunetr: checkpoints from before the choice
    existed); an unknown value raises :class:`ArchitectureError` listing the known ones."""
    architecture = model_config.get("architecture") or DEFAULT_ARCHITECTURE
    if architecture not in ARCHITECTURES:
        raise ArchitectureError(f"unknown model.architecture {architecture!r} (known: {', '.join(ARCHITECTURES)})")
    return str(architecture)


def architecture_settings(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture and the settings that shape its generator (what a checkpoint and a package record)."""
    architecture = architecture_of(model_config)
    if architecture == "resenc_unet":
        resenc = dict(model_config.get("resenc") or {})
        keys = ("features_per_stage", "blocks_per_stage", "upsample", "strides")
        return {"architecture": architecture, **{k: resenc[k] for k in keys if resenc.get(k) is not None}}
    keys = ("feature_size", "depths", "num_heads", "use_v2")
    return {"architecture": architecture, **{k: model_config[k] for k in keys if k in model_config}}


def state_architecture(state: Mapping[str, Any]) -> str | None:
    """Which generator a state dict belongs to, from its parameter names (None: neither)."""
    names = list(state)
    if names and all(name.startswith("net.") for name in names):
        return "swinunetr"
    if any(name.startswith("stem.") for name in names) and any(name.startswith("encoder.") for name in names):
        return "resenc_unet"
    return None


def check_generator_state(state: Mapping[str, Any], model_config: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ArchitectureError` when ``state`` holds the other architecture's generator than the config's."""
    expected = architecture_of(model_config)
    found = state_architecture(state)
    if found is not None and found != expected:
        raise ArchitectureError(f"{where}: the weights are a {found!r} generator, but model.architecture is "
                                f"{expected!r}; a {found} checkpoint cannot be loaded into a {expected} network "
                                f"(set model.architecture: {found}, or train a {expected} model)")


def build_generator(model_config: Mapping[str, Any]) -> nn.Module:
    """The generator described by the config's ``model`` section: ``architecture`` swinunetr (keys feature_size,
    depths, num_heads, use_v2, use_checkpoint) or resenc_unet (``resenc``: features_per_stage, blocks_per_stage,
    upsample, strides); missing keys take the defaults."""
    if architecture_of(model_config) == "resenc_unet":
        resenc = model_config.get("resenc") or {}
        return ResEncUNet(
            features_per_stage=tuple(resenc.get("features_per_stage", (32, 64, 128, 256, 320))),
            blocks_per_stage=tuple(resenc.get("blocks_per_stage", (1, 3, 4, 6, 6))),
            upsample=resenc.get("upsample", "trilinear"),
            strides=resenc.get("strides"),
        )
    return Generator(
        feature_size=int(model_config.get("feature_size", 24)),
        depths=tuple(model_config.get("depths", (2, 2, 2, 2))),
        num_heads=tuple(model_config.get("num_heads", (3, 6, 12, 24))),
        use_v2=bool(model_config.get("use_v2", False)),
        use_checkpoint=bool(model_config.get("use_checkpoint", False)),
    )


def build_discriminator(model_config: Mapping[str, Any]) -> PatchDiscriminator:
    """The discriminator described by the config's ``model`` section (keys: disc_channels, disc_layers)."""
    return PatchDiscriminator(
        base_channels=int(model_config.get("disc_channels", 32)),
        n_layers=int(model_config.get("disc_layers", 3)),
    )
