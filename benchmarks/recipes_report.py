"""Report of ``bench_recipes.py``: the machine, the table of final figures, the issue's targets and the picture
(learning curves: validation MAE vs wall-clock training minutes; the final figures as bars)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

TARGET_MAE_REDUCTION = 0.25
"""Issue 19: the new recipe's MAE at least 25 % below the paper's at the same budget."""
TARGET_SPEEDUP = 2.0
"""Issue 19: the new recipe at least 2× faster per head on the CPU."""


def machine() -> dict[str, Any]:
    """CPU model (lscpu), logical CPUs, the cores this process may use, and the load averages (1, 5, 15 min)."""
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu_model": model, "logical_cpus": os.cpu_count(), "usable_cpus": sorted(os.sched_getaffinity(0))}


def load() -> list[float]:
    """The 1-, 5- and 15-minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def _number(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The final figures, one line per recipe and region."""
    head = (f"{'recipe':<8} {'region':<7} {'steps':>6} {'train min':>9} {'MAE HU':>8} {'PSNR dB':>8} {'SSIM':>6} "
            f"{'γ ph %':>7} {'γ pr %':>7} {'s/head':>7}  backend (accuracy record)")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['recipe']:<8} {row['region']:<7} {row.get('steps') or 0:>6} "
                     f"{_number(row.get('train_minutes'), 1):>9} "
                     f"{_number(row.get('mae'), 1):>8} {_number(row.get('psnr'), 2):>8} "
                     f"{_number(row.get('ssim'), 3):>6} {_number(row.get('photon_gamma'), 1):>7} "
                     f"{_number(row.get('proton_gamma'), 1):>7} {_number(row.get('s_per_head'), 1):>7}  "
                     f"{row.get('backend') or '–'} ({row.get('accuracy') or '–'})")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], paper: str, new: str) -> list[dict[str, Any]]:
    """Per region: MAE reduction of ``new`` vs ``paper`` (target ≥ 25 %) and the per-head speed-up (≥ 2×)."""
    out = []
    for region in sorted({r["region"] for r in rows}):
        by = {r["recipe"]: r for r in rows if r["region"] == region}
        if paper not in by or new not in by:
            continue
        a, b = by[paper], by[new]
        entry: dict[str, Any] = {"region": region}
        if a.get("mae") and b.get("mae") is not None:
            reduction = 1.0 - b["mae"] / a["mae"]
            entry["mae_reduction"] = round(reduction, 3)
            entry["mae_target_met"] = reduction >= TARGET_MAE_REDUCTION
        if a.get("s_per_head") and b.get("s_per_head"):
            speedup = a["s_per_head"] / b["s_per_head"]
            entry["speedup"] = round(speedup, 2)
            entry["speed_target_met"] = speedup >= TARGET_SPEEDUP
        out.append(entry)
    return out


def target_lines(entries: list[dict[str, Any]], paper: str, new: str) -> list[str]:
    """Human lines for :func:`targets`."""
    lines = []
    for entry in entries:
        parts = [f"{entry['region']}:"]
        if "mae_reduction" in entry:
            parts.append(f"MAE {new} vs {paper} {-100 * entry['mae_reduction']:+.1f} % (target ≤ "
                         f"{-100 * TARGET_MAE_REDUCTION:.0f} %: {'met' if entry['mae_target_met'] else 'NOT met'})")
        if "speedup" in entry:
            parts.append(f"speed {entry['speedup']:.2f}× (target ≥ {TARGET_SPEEDUP:g}×: "
                         f"{'met' if entry['speed_target_met'] else 'NOT met'})")
        lines.append("  ".join(parts))
    return lines


def picture(path: Path, curves: dict[str, list[dict[str, float]]], rows: list[dict[str, Any]], title: str,
            budget_minutes: float) -> Path:
    """PNG: left, validation MAE vs training minutes per run (validations left out; the budget dashed); right,
    final MAE and s/head per recipe and region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    for name, points in sorted(curves.items()):
        if points:
            left.plot([p["minutes"] for p in points], [p["mae"] for p in points], marker="o", label=name)
    left.axvline(budget_minutes, color="grey", linestyle="--", linewidth=1, label=f"budget {budget_minutes:g} min")
    left.set_xlabel("wall-clock training minutes (start-up and steps; validations left out)")
    left.set_ylabel("validation MAE (HU, body)")
    left.set_title("learning curves")
    left.grid(alpha=0.3)
    left.legend()
    labels = [f"{r['recipe']}\n{r['region']}" for r in rows]
    positions = range(len(rows))
    bars = right.bar([p - 0.2 for p in positions], [r.get("mae") or 0.0 for r in rows], 0.4, label="MAE (HU)",
                     color="tab:blue")
    right.bar_label(bars, fmt="%.1f", fontsize=8)
    right.set_ylabel("final MAE (HU)")
    right.set_xticks(list(positions), labels)
    speed = right.twinx()
    timed = [(p, r["s_per_head"]) for p, r in zip(positions, rows, strict=True) if r.get("s_per_head")]
    bars = speed.bar([p + 0.2 for p, _ in timed], [t for _, t in timed], 0.4, label="s / real-size head",
                     color="tab:orange")  # regions without a speed case get no bar (not a 0)
    speed.bar_label(bars, fmt="%.1f", fontsize=8)
    speed.set_ylabel("s per real-size head (CPU default backend)")
    right.set_title("final figures")
    handles = right.get_legend_handles_labels()[0] + speed.get_legend_handles_labels()[0]
    right.legend(handles, ["MAE (HU)", "s / head"], loc="upper right", fontsize=8)
    text = "\n".join(f"{r['recipe']} {r['region']}: {r.get('steps') or 0} steps, PSNR {_number(r.get('psnr'), 2)}, "
                     f"SSIM {_number(r.get('ssim'), 3)}, photon / proton gamma 2 %/2 mm "
                     f"{_number(r.get('photon_gamma'), 1)} / {_number(r.get('proton_gamma'), 1)} %, "
                     f"{r.get('backend') or '–'}" for r in rows)
    figure.text(0.01, 0.01, text, fontsize=7, family="monospace", va="bottom")
    figure.suptitle(textwrap.fill(title, 170), fontsize=9)
    figure.tight_layout(rect=(0, 0.04 + 0.022 * len(rows), 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
