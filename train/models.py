"""Generator (MONAI SwinUNETR, output squashed to -1…1) and the conditional 3D PatchGAN discriminator.

Tensors are (batch, channel, z, y, x). Both networks are built from the ``model`` section of the training
config, so a checkpoint (which stores that config) rebuilds exactly the network it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from torch import nn


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


def build_generator(model_config: Mapping[str, Any]) -> Generator:
    """The generator described by the config's ``model`` section (keys: feature_size, depths, num_heads,
    use_v2, use_checkpoint; missing keys take the defaults)."""
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
