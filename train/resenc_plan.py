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


def stride_plan(strides: Sequence[Sequence[int]] | None, stages: int) -> list[Stride]:
    """``strides`` as one (z, y, x) tuple per stage (None: :func:`default_strides`); ValueError unless there is one
    entry of three positive integers per stage."""
    if strides is None:
        return default_strides(stages)
    if len(strides) != stages or any(len(s) != 3 or min(int(v) for v in s) < 1 for s in strides):
        raise ValueError(f"strides {[list(s) for s in strides]} need one (z, y, x) entry of positive integers per "
                         f"stage ({stages} stages)")
    return [(int(s[0]), int(s[1]), int(s[2])) for s in strides]


def divisors(strides: Sequence[Sequence[int]]) -> Stride:
    """(z, y, x): the product of the strides along each axis; every input size must be a multiple of it."""
    z, y, x = 1, 1, 1
    for stride in strides:
        z, y, x = z * int(stride[0]), y * int(stride[1]), x * int(stride[2])
    return z, y, x
