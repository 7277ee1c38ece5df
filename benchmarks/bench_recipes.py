"""Benchmark (issue 19): the paper's recipe against the residual-encoder U-Net regression on one CPU budget.

    nice -n 10 .venv/bin/python benchmarks/bench_recipes.py --work bench_out/recipes --budget-minutes 15 \
        [--concurrent] [--regions brain|pelvis|brain,pelvis] [--dose] [--speed-case full|small|none] \
        [--json FILE] [--picture FILE] [--redo-from STAGE]

Recipes: ``paper`` = configs/cpu_smoke.yaml (the paper's SwinUNETR generator + PatchGAN, shrunk to a CPU) and
``resenc`` = configs/resenc_cpu_smoke.yaml (residual-encoder U-Net, masked L1; the pelvis with
configs/resenc_cpu_smoke_pelvis.yaml, its patch shaped for 2.5 mm slices); ``--paper-config`` / ``--resenc-config``
take others, for every region (FILE) or one (REGION=FILE); ``--set KEY=VALUE`` overrides both.

Stages, each skipped when its output exists under ``--work`` (``--redo-from STAGE`` deletes the outputs of that
stage and the ones after it first):

1. ``data``: one dataset and one stratified split per region (benchmarks/recipes_data.py): brain = small phantoms
   + cases simulated from the real head CT; pelvis = small phantoms. One model per region, as the product trains.
   The per-recipe training caches are built here too (not on the training clock).
2. ``train``: first a few steps of each recipe (benchmarks/recipes_train.py, kept in runs/calibration while
   config, overrides, cores and threads stay the same) give the seconds per step, hence ``validation.every_steps``
   for about ``--validations`` validations per run; then ``synthct train --config <recipe> --set
   train.max_minutes=M --set train.budget_excludes_validation=true``: M minutes of start-up, training steps and
   checkpoints for both recipes whatever their validations cost (those run on top); the trainer stops in time for
   its last checkpoint; best.pt is the best validation; the learning curve's minutes leave the validations out.
   One after the other with every core and ``train.num_threads`` = cores, or ``--concurrent``:
   both at once, each pinned to its own core with one thread, the budget being then the same per core. With two
   regions each run gets half the budget.
3. ``export``: ``synthct export`` of each best.pt (parity, backend accuracy records).
4. ``predict`` + ``evaluate``: the validation cases with ``synthct predict --backend auto`` (each package's CPU
   default backend), scored by ``synthct evaluate`` (MAE / PSNR / SSIM in the body).
5. ``dose`` (``--dose``): photon and proton gamma 2 %/2 mm on two validation cases (``synthct evaluate --dose both``,
   the optional dose extra; skipped with a note when it is missing).
6. ``speed``: seconds per real-size head (the real head CT, 256 × 256 × 108 at 0.96 × 0.96 × 1.5 mm, with a simulated
   MR) through ``synthct predict --backend auto`` with each brain package: the inference seconds results.json
   records (geometry, normalisation, every window; not the process start), and whether the chosen backend's
   accuracy record in model.json passed.

Prints progress lines, the machine and the load averages at start and end, the table and the issue's targets
(MAE ≥ 25 % lower, ≥ 2× faster); writes ``--json`` (default WORK/bench_recipes.json) and ``--picture`` (default
WORK/bench_recipes.png: learning curves MAE vs minutes, final figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import recipes_data as data  # noqa: E402
import recipes_report as report  # noqa: E402
import recipes_train as training  # noqa: E402

from synthct.atomic import write_json_atomic  # noqa: E402

RECIPES = ("paper", "resenc")
DEFAULT_CONFIGS = {"paper": {"brain": REPO / "configs" / "cpu_smoke.yaml",
                             "pelvis": REPO / "configs" / "cpu_smoke.yaml"},
                   "resenc": {"brain": REPO / "configs" / "resenc_cpu_smoke.yaml",
                              "pelvis": REPO / "configs" / "resenc_cpu_smoke_pelvis.yaml"}}
"""Recipe → region → config: the paper's one CPU config for both; the ResEnc recipe's pelvis patch for 2.5 mm slices."""
STAGES = ("data", "train", "export", "predict", "evaluate", "dose", "speed")
DATA_KEYS = ("regions", "phantoms", "head_cases", "val_fraction", "seed", "inv3")
TRAIN_KEYS = ("budget_minutes", "concurrent", "validations", "paper_config", "resenc_config", "set")


class Say:
    """Progress lines ``[mm:ss] text`` on stdout, timed from the benchmark's start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        seconds = int(time.monotonic() - self.started)
        print(f"[{seconds // 60:02d}:{seconds % 60:02d}] {text}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("bench_out/recipes"),
                        help="keeps data, runs, packages, predictions (stages found done are skipped)")
    parser.add_argument("--budget-minutes", type=float, default=15.0,
                        help="wall-clock training budget per recipe (per core with --concurrent), validations "
                        "excepted, split evenly over the regions (default 15)")
    parser.add_argument("--concurrent", action="store_true",
                        help="train both recipes at once, each pinned to one core with one thread")
    parser.add_argument("--regions", choices=("brain", "pelvis", "brain,pelvis"), default="brain",
                        help="brain (default: phantoms + real-head cases), pelvis (phantoms; no speed figure) or "
                        "brain,pelvis (half the budget each)")
    parser.add_argument("--phantoms", type=int, default=10, help="small phantoms per region (default 10)")
    parser.add_argument("--head-cases", type=int, default=5,
                        help="brain cases simulated from the real head CT (default 5; 0: none)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction of each source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validations", type=int, default=4,
                        help="validations during each run, besides the final one (default 4); they run on top "
                        "of the budget")
    for recipe in RECIPES:
        parser.add_argument(f"--{recipe}-config", action="append", default=[], metavar="[REGION=]FILE",
                            help=f"{recipe}'s config, for every region or (REGION=FILE, repeatable) for one; "
                            "default " + ", ".join(f"{region}: {path.relative_to(REPO)}"
                                                   for region, path in DEFAULT_CONFIGS[recipe].items()))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both recipes (repeatable)")
    parser.add_argument("--dose", action="store_true", help="photon + proton gamma on two validation cases")
    parser.add_argument("--speed-case", choices=("full", "small", "none"), default="full",
                        help="full: the real head CT at its size (default); small: the first validation case; "
                        "none: no speed figure")
    parser.add_argument("--inv3", type=Path, default=data.INV3, help="the real head CT (InVesalius project)")
    parser.add_argument("--json", type=Path, default=None, help="results JSON (default WORK/bench_recipes.json)")
    parser.add_argument("--picture", type=Path, default=None, help="PNG (default WORK/bench_recipes.png)")
    parser.add_argument("--redo-from", choices=STAGES, default=None,
                        help="delete the outputs of this stage and of the later ones, then run")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ settings
def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"regions": args.regions, "phantoms": args.phantoms, "head_cases": args.head_cases,
            "val_fraction": args.val_fraction, "seed": args.seed, "inv3": str(args.inv3),
            "budget_minutes": args.budget_minutes, "concurrent": args.concurrent, "validations": args.validations,
            **{f"{recipe}_config": recipe_configs(args, recipe) for recipe in RECIPES},
            "set": list(args.overrides)}


def recipe_configs(args: argparse.Namespace, recipe: str) -> dict[str, str]:
    """Region → config file of ``recipe``: DEFAULT_CONFIGS, then ``--<recipe>-config FILE`` (every region), then
    ``--<recipe>-config REGION=FILE``."""
    chosen = {region: str(DEFAULT_CONFIGS[recipe][region].resolve()) for region in args.regions.split(",")}
    for entry in getattr(args, f"{recipe}_config"):
        region, _, path = entry.rpartition("=")  # no "=": region "", path the whole entry
        if region and region not in chosen:
            raise SystemExit(f"--{recipe}-config {entry}: region {region!r} is not one of --regions {args.regions}")
        if not Path(path).is_file():
            raise SystemExit(f"--{recipe}-config {entry}: no such file {path}")
        for key in ([region] if region else list(chosen)):
            chosen[key] = str(Path(path).resolve())
    return chosen


def check_settings(work: Path, settings: dict[str, Any], redo: str | None) -> None:
    """Refuse a work folder made with other data or training settings (a skipped stage would not match them),
    unless ``redo`` starts at or before the stage they concern."""
    path = work / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        for keys, stage in ((DATA_KEYS, "data"), (TRAIN_KEYS, "train")):
            changed = [k for k in keys if before.get(k) != settings[k]]
            if changed and not (redo and STAGES.index(redo) <= STAGES.index(stage)):
                raise SystemExit(f"{work} was made with other {', '.join(changed)} "
                                 f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)}): "
                                 f"use another --work, or --redo-from {stage}")
    write_json_atomic(path, settings)


def redo_from(work: Path, stage: str, names: list[str]) -> None:
    """Delete the outputs of ``stage`` and every later stage."""
    later = STAGES[STAGES.index(stage):]
    folders = {"data": [work / "data", work / "splits", work / "cache", work / "inputs", work / "speed_case"],
               "train": [work / "runs" / n for n in [*names, "calibration"]],
               "export": [work / "packages"], "predict": [work / "predict"],
               "evaluate": [work / "eval" / n / "metrics.json" for n in names],
               "dose": [work / "eval" / n / "dose" for n in names], "speed": [work / "speed"]}
    for name in later:
        for path in folders[name]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


# ------------------------------------------------------------------------------------------------ stages
def make_data(args: argparse.Namespace, work: Path, region: str, say: Say) -> dict[str, Any]:
    """The region's cases and split (``WORK/splits/<region>.json``), made once."""
    split_path = work / "splits" / f"{region}.json"
    if split_path.is_file():
        split = json.loads(split_path.read_text())
        say(f"data {region}: kept ({len(split['train'])} train, {len(split['val'])} validation)")
        return split
    root = work / "data"
    shutil.rmtree(data.region_dir(root, region), ignore_errors=True)
    say(f"data {region}: {args.phantoms} small phantoms")
    groups = {"phantom": data.make_phantoms(root, region, args.phantoms, args.seed, work / "logs")}
    if region == "brain" and args.head_cases:
        if args.inv3.is_file():
            say(f"data brain: {args.head_cases} cases from the real head CT {args.inv3}")
            groups["real_head"] = data.make_head_cases(args.inv3, root, args.head_cases, args.seed + 1, work,
                                                       work / "logs")
        else:
            say(f"data brain: {args.inv3} missing (apt-get install invesalius-examples): phantoms only")
    split = data.stratified_split(groups, args.val_fraction, args.seed, split_path)
    say(f"data {region}: {len(split['train'])} train, validation {', '.join(split['val'])}")
    return split


def prepare_cache(run: training.Run, root: Path, cache: Path, overrides: list[str], say: Say) -> None:
    """The run's training cache (its MR rule, patch), built before training so it is not on the budget's clock."""
    from synthct.train.config import load_config

    from synthct.cache import prepare_cache as build
    from synthct.cache import settings_for_patch

    if (cache / "manifest.json").is_file():
        return
    config = load_config(run.config, overrides, assignments={"region": run.region})
    rule = config.data.mr_normalisation
    say(f"cache {run.name}: MR rule {rule.rule}, patch {config.data.patch_size}")
    build(root, settings_for_patch(run.region, config.data.patch_size, rule.rule, rule.percentile), cache,
          progress=False, workers=2)


def export(run: training.Run, package: Path, work: Path, say: Say) -> None:
    if (package / "model.json").is_file():
        return
    say(f"export {run.name}: {run.out / 'best.pt'} → {package}")
    data.synthct(["export", "--checkpoint", str(run.out / "best.pt"), "--out", str(package), "--force",
                  "--no-progress"], work / "logs" / f"export_{run.name}.log")


def predict(package: Path, mr: Path, mask: Path, out: Path, log: Path, extra: Sequence[str] = ()) -> float:
    """``synthct predict --backend auto`` into ``out``; returns the process' wall-clock seconds."""
    started = time.perf_counter()
    data.synthct(["predict", "--mr", str(mr), "--mask", str(mask), "--model", str(package), "--out", str(out),
                  "--backend", "auto", "--no-qa", "--no-progress", *extra], log)
    return time.perf_counter() - started


def evaluate(pred: Path, gt: Path, out: Path, log: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``synthct evaluate --only-predicted`` → the metrics.json aggregates (key → mean)."""
    if not out.is_file():
        data.synthct(["evaluate", "--pred", str(pred), "--gt", str(gt), "--only-predicted", "--out", str(out),
                      "--no-progress", *extra], log)
    payload = json.loads(out.read_text())
    return {key: agg.get("mean") for key, agg in payload["aggregates"].items()}


def dose_cases(split: dict[str, Any]) -> list[str]:
    """Two validation cases for the dose check, phantoms first: the cases simulated from the real head CT are that
    head at half scale, whose intracranial space leaves no room for the evaluation's virtual PTV (measured: "room
    for a radius of 3.7 mm, at least 5 mm needed")."""
    val = split["val"]
    phantoms = [i for i in split.get("groups", {}).get("phantom", []) if i in val]
    return (phantoms + [i for i in val if i not in phantoms])[:2]


def dose(name: str, pred: Path, gt: Path, cases: list[str], work: Path, say: Say) -> dict[str, Any]:
    """Photon and proton gamma pass rates (%) on ``cases``, or a note why not."""
    from synthct.evaluation.dose import missing_modules

    missing = missing_modules()
    if missing:
        return {"note": f"dose extra missing ({', '.join(missing)}): pip install --no-deps -r "
                        "evaluation/requirements-dose.txt"}
    folder = work / "eval" / name / "dose"
    links = folder / "pred"
    links.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = links / f"{case}.mha"
        if not link.exists():
            link.symlink_to((pred / f"{case}.mha").resolve())
    if not (folder / "metrics.json").is_file():
        say(f"dose {name}: photon + proton plans on {', '.join(cases)}")
    means = evaluate(links, gt, folder / "metrics.json", work / "logs" / f"dose_{name}.log", ["--dose", "both"])
    return {"cases": cases, "photon_gamma": means.get("photon_gamma_pass_pct"),
            "proton_gamma": means.get("proton_gamma_pass_pct")}


def backend_record(package: Path, description: str) -> str:
    """Whether model.json's accuracy record passed for the backend ``description`` names."""
    backend = description.split()[0] if description else "?"
    if backend == "onnxruntime":
        return "fp32 reference"
    record = (json.loads((package / "model.json").read_text()).get("backend_accuracy") or {}).get("results", {})
    passed = (record.get(backend) or {}).get("passed")
    return {True: "passed", False: "FAILED"}.get(passed, "not measured")


def speed(name: str, package: Path, case: tuple[Path, Path], work: Path, say: Say) -> dict[str, Any]:
    """Seconds of one real-size head's inference with the package's CPU default backend (``WORK/speed/<name>``)."""
    out = work / "speed" / name
    record_path = out / "speed.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    overlap = json.loads((package / "model.json").read_text()).get("overlap", 0.5)
    say(f"speed {name}: one head with {package.name}'s CPU default backend")
    # --overlap (the package's own) makes results.json record the inference seconds
    wall = predict(package, case[0], case[1], out, work / "logs" / f"speed_{name}.log", ["--overlap", str(overlap)])
    entry = json.loads((out / "results.json").read_text())[0]
    description = entry.get("backend", {}).get("description", "")
    result = {"s_per_head": entry["inference"]["seconds"], "process_s": round(wall, 1), "backend": description,
              "selection": entry.get("backend", {}).get("selection"),
              "accuracy": backend_record(package, description)}
    write_json_atomic(record_path, result)
    return result


def speed_case(args: argparse.Namespace, work: Path, split: dict[str, Any], say: Say) -> tuple[Path, Path] | None:
    """(MR, mask) of the case timed per head: the real head at full size, a validation case, or none."""
    if args.speed_case == "none":
        return None
    folder = work / "speed_case"
    if args.speed_case == "small":
        case = split["val"][-1]
        return data.link_inputs(work / "data", "brain", [case], folder / "small")
    if not args.inv3.is_file():
        say(f"speed: {args.inv3} missing (apt-get install invesalius-examples): no real-size head")
        return None
    if not (folder / "mask" / "head.mha").is_file():
        info = data.real_size_head(args.inv3, folder, args.seed + 100)
        say(f"speed: real head {info['size_xyz']} voxels at {info['spacing_xyz_mm']} mm with a simulated MR")
    return folder / "mr", folder / "mask"


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    say = Say()
    host, load_start = report.machine(), report.load()
    say(f"machine: {host['cpu_model']}, {host['logical_cpus']} logical CPUs, usable {host['usable_cpus']}; "
        f"load average {load_start}")
    regions = args.regions.split(",")
    names = [f"{recipe}_{region}" for region in regions for recipe in RECIPES]
    settings = settings_of(args)
    check_settings(work, settings, args.redo_from)
    if args.redo_from:
        redo_from(work, args.redo_from, names)
    cpus = host["usable_cpus"]
    if args.concurrent and len(cpus) < 2:
        raise SystemExit("--concurrent needs 2 usable cores")
    minutes = args.budget_minutes / len(regions)
    how = (f"concurrently, each recipe pinned to one core (cores {cpus[0]} and {cpus[1]}) with 1 thread: "
           f"{args.budget_minutes:g} min per recipe per core" if args.concurrent else
           f"one after the other, {len(cpus)} threads each: {args.budget_minutes:g} min per recipe")
    sources = {"brain": f"brain = {args.phantoms} small phantoms + {args.head_cases} real-head cases",
               "pelvis": f"pelvis = {args.phantoms} small phantoms"}
    choice = (f"regions: {args.regions} (one model per region per recipe; {minutes:g} min of training each); "
              + ", ".join(sources[region] for region in regions))
    say(f"training {how}")
    say(choice)
    splits = {region: make_data(args, work, region, say) for region in regions}

    configs: dict[str, dict[str, str]] = {recipe: settings[f"{recipe}_config"] for recipe in RECIPES}
    say("configs: " + ", ".join(f"{recipe}_{region} {Path(configs[recipe][region]).name}"
                                for region in regions for recipe in RECIPES))
    runs: dict[str, training.Run] = {}
    for region in regions:
        for index, recipe in enumerate(RECIPES):
            name = f"{recipe}_{region}"
            runs[name] = training.Run(name, Path(configs[recipe][region]), region, work / "runs" / name,
                                      list(args.overrides), cpus={cpus[index]} if args.concurrent else None,
                                      threads=1 if args.concurrent else len(cpus))
    caches = {name: work / "cache" / name for name in runs}
    for name, run in runs.items():
        prepare_cache(run, work / "data", caches[name], args.overrides, say)

    calibration: dict[str, dict[str, float]] = {}
    argvs: dict[str, list[str]] = {}
    for region in regions:
        group = [runs[f"{recipe}_{region}"] for recipe in RECIPES]
        split_path = work / "splits" / f"{region}.json"
        calibration.update(training.calibrate(group, work / "data", split_path, caches, args.concurrent, say))
        todo = []
        for run in group:
            every = training.validation_every(minutes * 60.0, calibration[run.name], args.validations)
            run.overrides = [*args.overrides, f"train.max_minutes={minutes:g}", "train.budget_excludes_validation=true",
                             "train.max_steps=0", f"validation.every_steps={every}",
                             "validation.every_epochs=0", "validation.at_end=true"]
            argvs[run.name] = training.command(run, work / "data", split_path, caches[run.name])
            say(f"{run.name}: {calibration[run.name]['step_s']:.2f} s/step → validation every {every} steps, "
                f"train.max_minutes {minutes:g} (validations on top)")
            if training.finished(run.out):
                say(f"train {run.name}: done before, kept ({run.out})")
            else:
                shutil.rmtree(run.out, ignore_errors=True)  # a partial run would not have had the whole budget
                todo.append(run)
        if todo:
            say(f"train {', '.join(r.name for r in todo)}: {minutes:g} min each, {how.split(':')[0]}")
            training.run_all(todo, [argvs[r.name] for r in todo], args.concurrent, say)

    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, float]]] = {}
    timing_case = speed_case(args, work, splits["brain"], say) if "brain" in splits else None
    for name, run in runs.items():
        end = training.finished(run.out) or {}
        curves[name] = training.learning_curve(run.out)
        package = work / "packages" / name
        export(run, package, work, say)
        split = splits[run.region]
        mr, mask = data.link_inputs(work / "data", run.region, split["val"], work / "inputs" / run.region)
        pred = work / "predict" / name
        if not (pred / "results.json").is_file():
            say(f"predict {name}: {len(split['val'])} validation case(s)")
            predict(package, mr, mask, pred, work / "logs" / f"predict_{name}.log")
        gt = data.region_dir(work / "data", run.region)
        means = evaluate(pred, gt, work / "eval" / name / "metrics.json", work / "logs" / f"evaluate_{name}.log")
        entries = json.loads((pred / "results.json").read_text())
        description = entries[0].get("backend", {}).get("description", "") if entries else ""
        row: dict[str, Any] = {"recipe": name.split("_")[0], "region": run.region, "steps": end.get("step"),
                               "stopped": end.get("stopped"), "run_minutes": round(end.get("elapsed_s", 0.0) / 60.0, 2),
                               "train_minutes": training.training_minutes(run.out),
                               "best_validation_mae": end.get("best_mae"), "mae": means.get("mae"),
                               "psnr": means.get("psnr"), "ssim": means.get("ssim"), "backend": description,
                               "accuracy": backend_record(package, description)}
        if args.dose:
            row["dose"] = dose(name, pred, gt, dose_cases(split), work, say)
            row["photon_gamma"] = row["dose"].get("photon_gamma")
            row["proton_gamma"] = row["dose"].get("proton_gamma")
            if "note" in row["dose"]:
                say(f"dose {name}: skipped, {row['dose']['note']}")
        if timing_case is not None and run.region == "brain":
            row["speed"] = speed(name, package, timing_case, work, say)
            row.update({k: row["speed"][k] for k in ("s_per_head", "backend", "accuracy")})
        say(f"{name}: MAE {means.get('mae') or float('nan'):.1f} HU after {row['steps']} steps")
        rows.append(row)

    load_end = report.load()
    goals = report.targets(rows, "paper", "resenc")
    print()
    print(f"machine: {host['cpu_model']}, {host['logical_cpus']} logical CPUs; training {how}")
    print(choice)
    print(f"speed case: {args.speed_case}; load average at start {load_start}, at end {load_end}")
    print()
    print(report.table(rows))
    print()
    for line in report.target_lines(goals, "paper", "resenc"):
        print(line)
    title = (f"{host['cpu_model']} ({len(cpus)} cores), training {how}; {choice}")
    picture = report.picture(args.picture or work / "bench_recipes.png", curves, rows, title, minutes)
    payload = {"machine": host, "load_average_start": load_start, "load_average_end": load_end,
               "training": how, "choice": choice, "settings": settings, "calibration": calibration,
               "train_commands": {k: [str(x) for x in v] for k, v in argvs.items()}, "splits": splits,
               "rows": rows, "targets": goals, "learning_curves": curves, "picture": str(picture)}
    out = args.json or work / "bench_recipes.json"
    write_json_atomic(out, payload)
    print(f"\nwrote {out} and {picture}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"bench_recipes: {exc}", file=sys.stderr)
        sys.exit(1)
