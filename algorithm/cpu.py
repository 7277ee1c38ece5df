"""What this process may use of the CPU: instruction-set features, usable cores, memory limit (Linux; no torch).

Usable cores are the process's CPU affinity, bounded by the cgroup CPU quota (``cpu.max`` in cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1) — ``docker run --cpus=2`` on a 64-core host gives 2, not 64.
The memory limit is the cgroup's ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1); None when unlimited.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags with native bf16 dot products (AVX-512 BF16 on Zen 4 / Cooper Lake, AMX on Sapphire Rapids)."""
_UNLIMITED_BYTES = 1 << 60


@lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (empty where the file is missing, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def supports_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (else a bf16 hint is emulated and slower than f32)."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_FLAGS)


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``vendor_id`` of /proc/cpuinfo (``AuthenticAMD``, ``GenuineIntel``), or ``""``."""
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("vendor_id") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs granted by the cgroup quota (e.g. 1.5), or None when there is no quota."""
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota_us, period_us = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota_us and period_us and int(quota_us) > 0 and int(period_us) > 0:
        return int(quota_us) / int(period_us)
    return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """Threads worth running: CPUs in this process's affinity, capped by the cgroup quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, max(math.ceil(quota - 1e-9), 1))
    return max(cpus, 1)


def memory_limit_bytes(root: Path = CGROUP_ROOT) -> int | None:
    """The cgroup's memory limit in bytes, or None when unlimited or unknown."""
    value = _read(root / "memory.max") or _read(root / "memory" / "memory.limit_in_bytes")
    if not value or value == "max":
        return None
    limit = int(value)
    return None if limit >= _UNLIMITED_BYTES else limit
