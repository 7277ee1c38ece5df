"""Residual-encoder 3-D U-Net (nnU-Net "ResEnc" style): the regression generator of the second recipe.

Tensors are (batch, channel, z, y, x). Encoder: a stem convolution, then per stage ``blocks_per_stage[s]`` residual
blocks (conv-IN-LeakyReLU-conv-IN + skip, then LeakyReLU), the first block of every stage but the first
down-sampling with a strided convolution (its skip a strided 1×1×1 convolution + IN, also where the width changes).
The strides are per stage and axis (nnU-Net's plans): 2 on every axis by default, or e.g. ``(1, 2, 2)`` first for
thick slices, so that z is halved only once the in-plane voxels have caught up with the slice spacing.
Decoder: per stage, up-sampling by that stage's stride (trilinear then a 1×1×1 convolution, or a transposed
convolution with kernel = stride), the encoder's skip concatenated, one conv-IN-LeakyReLU block. Head: a 1×1×1
convolution to one channel, then tanh: the same output convention as the SwinUNETR generator (normalised CT in
[-1, 1]), so the package's HU mapping holds.

Instance norms are ``nn.InstanceNorm3d(affine=True)``: the export's accurate-norm swap
(:mod:`synthct.export.accurate_norm`) replaces them like SwinUNETR's. Every spatial size must be a multiple of the
product of the strides along its axis (:attr:`ResEncUNet.divisors`), and the deepest stage should keep at least 2
voxels per axis (instance norm in training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from synthct.train.resenc_plan import Stride, divisors, stride_plan
from torch import nn

Upsample = Literal["trilinear", "transposed"]
UPSAMPLE_MODES = ("trilinear", "transposed")
NEGATIVE_SLOPE = 0.01
"""nnU-Net's leaky ReLU slope."""


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, eps=1e-5, affine=True)


class ConvNormAct(nn.Sequential):
    """3×3×3 convolution (no bias: the norm has one), instance norm, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         _norm(out_channels), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


class ResidualBlock(nn.Module):
    """``act(IN(conv(act(IN(conv(x))))) + skip(x))``; skip: identity, or a 1×1×1 convolution (+ IN) when the
    stride or the width changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | Stride = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        self.skip: nn.Module = nn.Identity()
        if stride not in (1, (1, 1, 1)) or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                                      _norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.skip(x))


class UpBlock(nn.Module):
    """Undo one stage's stride and change the width: trilinear up-sampling + 1×1×1 convolution, or a transposed
    convolution whose kernel is the stride."""

    def __init__(self, in_channels: int, out_channels: int, mode: Upsample, stride: Stride = (2, 2, 2)) -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample {mode!r} (expected one of {UPSAMPLE_MODES})")
        self.mode = mode
        self.stride = stride
        if mode == "transposed":
            self.conv: nn.Module = nn.ConvTranspose3d(in_channels, out_channels, stride, stride=stride, bias=False)
        else:
            self.conv = nn.Conv3d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "trilinear":
            x = F.interpolate(x, scale_factor=tuple(float(f) for f in self.stride), mode="trilinear",
                              align_corners=False)
        return self.conv(x)


class ResEncUNet(nn.Module):
    """Residual-encoder U-Net, 1 → 1 channel, output tanh: normalised MR in, normalised CT in [-1, 1] out.

    ``features_per_stage`` (widths, shallowest first), ``blocks_per_stage`` (residual blocks per encoder stage) and
    ``strides`` ((z, y, x) per stage, the first usually (1, 1, 1); None: :func:`default_strides`) have one entry per
    stage; the input's spatial sizes must be multiples of :attr:`divisors`.
    """

    def __init__(self, features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
                 blocks_per_stage: Sequence[int] = (1, 3, 4, 6, 6), upsample: Upsample = "trilinear",
                 strides: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        features = [int(f) for f in features_per_stage]
        blocks = [int(b) for b in blocks_per_stage]
        if len(features) != len(blocks) or len(features) < 2:
            raise ValueError(f"features_per_stage {features} and blocks_per_stage {blocks} need one entry per stage "
                             "and at least 2 stages")
        if min(features) < 1 or min(blocks) < 1:
            raise ValueError(f"widths and block counts must be ≥ 1, got {features} and {blocks}")
        plan = stride_plan(strides, len(features))
        self.features = features
        self.strides = plan
        self.stem = ConvNormAct(1, features[0])
        self.encoder = nn.ModuleList()
        previous = features[0]
        for stage, (width, count) in enumerate(zip(features, blocks, strict=True)):
            layers = [ResidualBlock(previous, width, stride=plan[stage])]
            layers += [ResidualBlock(width, width) for _ in range(count - 1)]
            self.encoder.append(nn.Sequential(*layers))
            previous = width
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for stage in range(len(features) - 2, -1, -1):
            self.up.append(UpBlock(features[stage + 1], features[stage], upsample, plan[stage + 1]))
            self.decoder.append(ConvNormAct(2 * features[stage], features[stage]))
        self.head = nn.Conv3d(features[0], 1, 1)

    @property
    def divisors(self) -> Stride:
        """(z, y, x): every spatial size of the input must be a multiple of this along its axis."""
        return divisors(self.strides)

    def forward(self, mr: torch.Tensor) -> torch.Tensor:
        skips = []
        x = self.stem(mr)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return torch.tanh(self.head(x))
