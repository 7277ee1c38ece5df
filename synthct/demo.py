"""``make demo``: the whole pipeline on a fresh machine, each stage run as its own process, as a user would.

1. phantom brain cases (SynthRAD 2023 layout) and their seeded 80/20 split;
2. the intensity-only baseline on that split (the floor a model must beat);
3. ``synthct train`` with the ResEnc recipe's CPU config (``resenc_cpu_smoke``, the recipe that wins at this
   budget: benchmarks/bench_recipes.py) for a fixed number of steps (seeded: the same model on any machine, however
   busy; ``--minutes`` adds a wall-clock budget for those who want one; ``--config cpu_smoke --steps 400`` trains
   the paper's recipe instead);
4. ``synthct export`` → ONNX model package (parity-checked);
5. the algorithm container's entry point (``python -m synthct.algorithm``) on a grand-challenge ``/input`` tree made
   from the validation cases, with the ``SYNTHCT_*`` path overrides;
6. ``synthct evaluate`` on its output, with pictures and a report.

Everything lands under ``--out`` (default ``demo/``); the closing table compares the model with the baseline.
This module only orchestrates subprocesses: it imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO_CONFIG = "resenc_cpu_smoke"
"""Training config of ``make demo``: the residual-encoder U-Net recipe (configs/resenc_cpu_smoke.yaml)."""
DEMO_STEPS = 4000
"""Training steps of ``make demo`` (poly schedule over these steps): about the training time of the paper recipe's
former demo (configs/cpu_smoke.yaml, 400 steps, ≈ 870 s on a quiet 2-core machine) or less: a ResEnc step on its
32³ patches takes about 0.2 s on one core (4000 steps: 794 s with ``--threads 1`` beside the test suite)."""


def _run(title: str, command: list[str], env: dict[str, str] | None = None) -> None:
    print(f"\n=== {title}\n$ {' '.join(command)}", flush=True)
    started = time.monotonic()
    completed = subprocess.run(command, env={**os.environ, **(env or {})}, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed with exit status {completed.returncode}")
    print(f"--- {title}: {time.monotonic() - started:.0f} s", flush=True)


def _synthct(*args: str) -> list[str]:
    return [sys.executable, "-m", "synthct", *args]


def _grand_challenge_input(data: Path, case_ids: list[str], region: str, target: Path) -> None:
    """A grand-challenge ``/input`` tree: images/mri/<ID>.mha, images/body/<ID>.mha, region.json."""
    if target.exists():
        shutil.rmtree(target)
    (target / "images" / "mri").mkdir(parents=True)
    (target / "images" / "body").mkdir(parents=True)
    for case_id in case_ids:
        case_dir = data / "Task1" / region / case_id
        shutil.copyfile(case_dir / "mr.mha", target / "images" / "mri" / f"{case_id}.mha")
        shutil.copyfile(case_dir / "mask.mha", target / "images" / "body" / f"{case_id}.mha")
    (target / "region.json").write_text(json.dumps(region.capitalize()) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"), help="demo folder (default demo/)")
    parser.add_argument("--cases", type=int, default=10, help="phantom cases (default 10: 8 train, 2 validation)")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS,
                        help=f"training steps (default {DEMO_STEPS}; 0: no step limit, then give --minutes)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="also stop training after this many minutes, final validation included (default 0: "
                             "no time budget, the run's result then does not depend on the machine's speed)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for training (default 0: torch's choice; 1: bit-identical reruns, "
                             "as multi-threaded CPU kernels do not fix their summation order)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=DEMO_CONFIG,
                        help=f"training config: a bundled name (default {DEMO_CONFIG}; cpu_smoke with --steps 400: "
                        "the paper's recipe) or a YAML file")
    args = parser.parse_args(argv)
    if args.steps <= 0 and args.minutes <= 0:
        parser.error("--steps 0 needs --minutes: training needs an end")

    out: Path = args.out.resolve()
    region = "brain"
    data, run_dir, models = out / "data", out / "runs" / "brain", out / "models"
    split = out / "split.json"
    out.mkdir(parents=True, exist_ok=True)

    _run("1. phantom data", _synthct("phantom", "--out", str(data), "--region", region, "--cases", str(args.cases),
                                     "--seed", str(args.seed), "--size", "small"))
    _run("1b. split", _synthct("data", "split", str(data), "--region", region, "--out", str(split),
                               "--seed", str(args.seed)))
    _run("2. intensity-only baseline", _synthct("baseline", "--data", str(data), "--region", region,
                                                "--split", str(split), "--out", str(out / "baseline")))
    _run("3. train", _synthct("train", "--config", str(args.config), "--data", str(data), "--region", region,
                              "--split", str(split), "--out", str(run_dir),
                              "--set", f"train.max_steps={args.steps}", "--set", f"train.max_minutes={args.minutes}",
                              "--set", f"train.num_threads={args.threads}"))
    _run("4. export", _synthct("export", "--checkpoint", str(run_dir / "best.pt"), "--out", str(models / region)))

    val_ids = json.loads(split.read_text(encoding="utf-8"))["val"]
    container_input, container_output = out / "container" / "input", out / "container" / "output"
    _grand_challenge_input(data, val_ids, region, container_input)
    _run("5. algorithm container (python -m synthct.algorithm)", [sys.executable, "-m", "synthct.algorithm"],
         env={"SYNTHCT_INPUT": str(container_input), "SYNTHCT_OUTPUT": str(container_output),
              "SYNTHCT_MODELS": str(models)})

    ground_truth = data / "Task1" / region
    _run("6. evaluation", _synthct("evaluate", "--pred", str(container_output / "images" / "synthetic-ct"),
                                   "--gt", str(ground_truth), "--only-predicted",
                                   "--pictures", str(out / "evaluation"), "--out", str(out / "metrics.json")))
    _summary(out)
    return 0


def _summary(out: Path) -> None:
    model = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["aggregates"]
    baseline_file = out / "baseline" / "baseline.json"
    baseline = json.loads(baseline_file.read_text(encoding="utf-8")) if baseline_file.exists() else {}
    baseline_agg = baseline.get("aggregates", {})
    print("\n=== result on the validation cases (mean)")
    print(f"{'metric':<8}{'baseline':>12}{'synthct':>12}")
    for metric in ("mae", "psnr", "ssim"):
        base = baseline_agg.get(metric, {}).get("mean")
        ours = model.get(metric, {}).get("mean")
        print(f"{metric:<8}{_fmt(base):>12}{_fmt(ours):>12}")
    print(f"\npictures and report: {out / 'evaluation'}")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
