"""Benchmark: would inference windows larger than the trained 64³ keep the sCT within the accuracy bound?

    python benchmarks/bench_window_size.py --checkpoint runs/fs24/best.pt --data data/brain \
        [--configs 64:0.5,96:0.5,96:0.333,128:0.5] [--cases 2]

SwinUNETR's attention is windowed (7³ windows, shifted), so the network accepts any window whose sides are multiples
of 32; a larger window with a smaller relative overlap computes fewer voxels per sCT voxel (64³ at 50 % computes each
voxel ~8 times, 96³ at 1/3 ~3.4 times). But the deeper stages then see a different context than in training (at 64³
the two deepest stages' feature maps, 4³ and 2³, are smaller than one attention window), so the output changes.

For each configuration the checkpoint's generator runs in PyTorch eager fp32 through MONAI's
``sliding_window_inference`` (gaussian blending, σ = 0.125 of the window) on the training run's validation cases
(:func:`synthct.export.backend_accuracy.accuracy_cases`), and the sCT is compared with the 64³ / 50 % one by the
bound the
export enforces on reduced-precision backends (:data:`export.backend_accuracy.BOUND`: MAE against the CT changes by
≤ 1 HU, mean |Δ| inside the mask ≤ 3 HU). Also printed: the voxels computed per case relative to 64³ / 50 %, the
work the larger window would save. A configuration is worth offering only when it passes on every case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _configs(text: str) -> list[tuple[int, float]]:
    configs = []
    for item in text.split(","):
        size, overlap = item.split(":")
        if int(size) % 32:
            raise SystemExit(f"--configs: window side {size} is not a multiple of 32 (SwinUNETR's requirement)")
        configs.append((int(size), float(overlap)))
    return configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (best.pt / last.pt)")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the checkpoint's data.root)")
    parser.add_argument("--configs", default="64:0.5,96:0.5,96:0.333,128:0.5", help="window:overlap, ... (first = "
                        "reference; the paper's 64:0.5)")
    parser.add_argument("--cases", type=int, default=2, help="validation cases (the split's, else phantoms)")
    parser.add_argument("--work-shape", default="181,217,181",
                        help="z,y,x of a volume the work ratio is also given for (default: a SynthRAD brain)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import SimpleITK as sitk
    import torch
    from monai.inferers import sliding_window_inference
    from synthct.algorithm.cpu import usable_cpus
    from synthct.export.backend_accuracy import BOUND, accuracy_cases, deviation, judge
    from synthct.export.source import build_generator_for_export, read_checkpoint

    from synthct.intensity import denormalise_ct, finalise_sct, normalise_mr
    from synthct.sliding_window import plan_windows

    torch.set_num_threads(args.threads or usable_cpus())
    configs = _configs(args.configs)
    source = read_checkpoint(args.checkpoint)
    data = args.data or Path(str((source.config.get("data") or {}).get("root") or ""))
    cases = accuracy_cases(source.region, args.cases, data if data.is_dir() else None, source.config)
    generator = build_generator_for_export(source)
    print(f"checkpoint {args.checkpoint} (region {source.region}); cases {[c.name for c in cases]}; "
          f"bound {BOUND}")
    results: dict[str, dict] = {}
    reference: dict[str, np.ndarray] = {}
    for size, overlap in configs:
        label = f"{size}³/{overlap:g}"
        per_case, seconds, work = [], 0.0, []
        for case in cases:
            mask = sitk.GetArrayViewFromImage(case.mask) > 0
            normalised = normalise_mr(sitk.GetArrayViewFromImage(case.mr).astype(np.float32), mask,
                                      source.mr_rule, source.mr_percentile)  # type: ignore[arg-type]
            started = time.perf_counter()
            with torch.no_grad():
                output = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(normalised))[None, None],
                                                  (size,) * 3, 1, generator, overlap=overlap, mode="gaussian",
                                                  sigma_scale=0.125, padding_mode="constant", cval=-1.0)
            seconds += time.perf_counter() - started
            sct = finalise_sct(denormalise_ct(output[0, 0].numpy()), mask).astype(np.float32)
            plan = plan_windows(mask.shape, (size,) * 3, overlap)
            work.append(plan.n_windows * size**3)
            if case.name in reference:
                per_case.append({"case": case.name, **deviation(reference[case.name], sct, case.ct_hu, mask)})
            else:
                reference[case.name] = sct
        base_work = results[next(iter(results))]["voxels_computed"] if results else work
        shape = tuple(int(n) for n in args.work_shape.split(","))
        big = plan_windows(shape, (size,) * 3, overlap).n_windows * size**3
        big_base = plan_windows(shape, (configs[0][0],) * 3, configs[0][1]).n_windows * configs[0][0] ** 3
        entry = {"seconds": round(seconds, 1), "voxels_computed": work,
                 "work_vs_reference": float(np.sum(work) / np.sum(base_work)),
                 "work_vs_reference_on_work_shape": big / big_base}
        if per_case:
            entry.update(judge(per_case))
            entry["cases"] = per_case
        results[label] = entry
        worst = entry.get("worst", {})
        print(f"{label:>9s}: {seconds:6.1f} s, work ×{entry['work_vs_reference']:.2f} (on {shape}: "
              f"×{entry['work_vs_reference_on_work_shape']:.2f})"
              + (f", worst MAE change {worst['mae_change_hu']:.2f} HU, worst mean|Δ| {worst['mean_abs_hu_in_mask']:.2f}"
                 f" HU, max|Δ| {worst['max_abs_hu_in_mask']:.0f} HU → {'within' if entry['passed'] else 'OUTSIDE'}"
                 " the bound" if per_case else " (reference)"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
