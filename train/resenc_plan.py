"""The ResEnc U-Net's down-sampling plan (per stage, per axis), without torch: the config checks a patch against it.

Strides are (z, y, x) per stage, nnU-Net's plans: the first stage keeps full resolution, each next one divides the
axes by its stride. Every input size must be a multiple of the product of the strides along its axis.
"""

from __future__ import annotations

from collections.abc import Sequence

Stride = tuple[int, int, int]
"""Down-sampling factor of one stage along (z, y, x)."""


def default_strides(stages: int) -> list[Stride]:
    """nnU-Net's isotropic plan: stride 1 for the first stage, 2 on every axis for each next one."""
    return [(1, 1, 1)] + [(2, 2, 2)] * (stages - 1)


def divisors(strides: Sequence[Sequence[int]]) -> Stride:
    """(z, y, x): the product of the strides along each axis; every input size must be a multiple of it."""
    z, y, x = 1, 1, 1
    for stride in strides:
        z, y, x = z * int(stride[0]), y * int(stride[1]), x * int(stride[2])
    return z, y, x
