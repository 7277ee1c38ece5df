"""Benchmark of the dose evaluation on real-size phantoms: seconds per stage and peak RSS, per region and modality.

Each (region, modality) runs in a fresh subprocess so that its peak RSS (``ru_maxrss`` of the child) is its own.
The sCT is the CT with soft tissue (−200…200 HU inside the body) raised by 60 HU. Usage::

    python benchmarks/bench_dose.py [--size synthrad] [--regions brain pelvis] [--modalities photon proton]
        [--set key=value ...] [--out benchmarks/results/dose.json]

``total_s`` is wall time of structures + plan + gamma; ``cpu_s`` the CPU seconds they used (a shared machine
inflates wall time, not CPU time). Targets (issue 11): ≤ 3 min per case and modality at the 3 mm default dose grid,
≤ 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(region: str, size: str, modality: str, assignments: list[str]) -> dict:
    import numpy as np
    import SimpleITK as sitk
    from synthct.evaluation.dose.config import load_dose_config
    from synthct.evaluation.dose.evaluate import _modality_scores, case_structures
    from synthct.evaluation.dose.planning import plan_and_recalculate

    from synthct.phantom.generate import generate_case

    config = load_dose_config(None, assignments)
    start = time.perf_counter()
    _, ct, mask = generate_case(region, 1, size)
    spacing = tuple(float(s) for s in reversed(ct.GetSpacing()))
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    body = sitk.GetArrayFromImage(mask) > 0
    del ct, mask
    sct = hu.copy()
    sct[(hu > -200) & (hu < 200) & body] += 60.0
    phantom_s = time.perf_counter() - start
    cpu_before = _cpu_seconds()  # CPU seconds of the evaluation only (not the phantom)
    start = time.perf_counter()
    structures = case_structures("1BA001" if region == "brain" else "1PA001", hu, body, spacing, config)
    structures_s = time.perf_counter() - start
    start = time.perf_counter()
    plan = plan_and_recalculate(hu, sct, body, spacing, structures, modality, config)
    plan_s = time.perf_counter() - start
    scores = _modality_scores(plan, config)
    seconds = {"structures": round(structures_s, 2), **scores["seconds"]}
    total = structures_s + plan_s + scores["seconds"]["gamma"]
    return {
        "region": region, "size": size, "modality": modality, "ct_shape_zyx": list(hu.shape),
        "spacing_mm_zyx": list(spacing), "dose_grid_zyx": scores["dose_grid_shape_zyx"],
        "beamlets": scores["optimiser"]["beamlets"], "iterations": scores["optimiser"]["iterations"],
        "phantom_s": round(phantom_s, 1), "seconds": seconds, "total_s": round(total, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "cpu_s": round(_cpu_seconds() - cpu_before, 1),
        "dose_mae_pct": round(scores["dose_mae_pct"], 3), "gamma_pass_pct": round(scores["gamma_pass_pct"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="synthrad", choices=("small", "medium", "synthrad"))
    parser.add_argument("--regions", nargs="+", default=["brain", "pelvis"])
    parser.add_argument("--modalities", nargs="+", default=["photon", "proton"])
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dose.json"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(*args.child, args.assignments)), flush=True)
        return 0
    rows = []
    for region in args.regions:
        for modality in args.modalities:
            command = [sys.executable, __file__, "--child", region, args.size, modality]
            command += [f"--set={a}" for a in args.assignments]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", env=os.environ.copy())
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                row = {"region": region, "modality": modality, "error": done.stderr.strip().splitlines()[-3:]}
            else:
                row = json.loads(lines[-1][len("RESULT "):])
            row["wall_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "note": "shared machine: other engineers were working at the same time"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": args.assignments, "results": rows}, indent=1),
                        encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
