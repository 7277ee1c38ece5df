"""Training part of ``bench_recipes.py``: ``synthct train`` runs of both recipes on one budget, one after the
other with every core, or concurrently with one core each (pinned with ``os.sched_setaffinity``, one torch thread).

A short calibration run per recipe (a few steps, no validation; same cores and threads as the real run) gives
the seconds per step and before the first step. From them ``validation.every_steps`` is set so that each run
validates about ``validations`` times spread over its budget, plus the trainer's final validation. Every run has
``train.max_minutes`` = the budget and ``train.budget_excludes_validation``: the budget buys start-up, training
steps and checkpoints, every validation runs on top, so a generator that is slower to validate (the paper's) does
not lose training time to the learning curve's points.
The curve is read from each run's ``log.jsonl`` (train/logs.py): its ``validation`` records hold the step,
MAE / PSNR / SSIM, the validation's ``seconds`` and ``elapsed_s`` (wall clock since the trainer started, taken
after the validation); training minutes = elapsed_s less every validation's seconds so far.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthct.atomic import write_json_atomic

CALIBRATION_STEPS = 8


@dataclass
class Run:
    """One ``synthct train`` run: its name (``<recipe>_<region>``), config, folder and command-line overrides."""

    name: str
    config: Path
    region: str
    out: Path
    overrides: list[str] = field(default_factory=list)
    cpus: set[int] | None = None
    threads: int = 1


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/log.jsonl`` (none when it does not exist; a torn last line is skipped)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def learning_curve(run_dir: Path) -> list[dict[str, float]]:
    """``[{step, minutes, wall_minutes, mae, psnr, ssim, validation_s}]`` of the run's validations, in order;
    ``minutes`` = wall-clock minutes since the trainer started less the validations so far (this one included)."""
    points, validating = [], 0.0
    for record in read_log(run_dir):
        if record.get("kind") != "validation":
            continue
        validating += record.get("seconds", 0.0)
        points.append({"step": record["step"], "minutes": round((record["elapsed_s"] - validating) / 60.0, 3),
                       "wall_minutes": round(record["elapsed_s"] / 60.0, 3), "mae": record.get("mae"),
                       "psnr": record.get("psnr"), "ssim": record.get("ssim"),
                       "validation_s": round(record.get("seconds", 0.0), 1)})
    return points


def training_minutes(run_dir: Path) -> float | None:
    """Minutes of the finished run less its validations (start-up, steps and checkpoints); None if unfinished."""
    end = finished(run_dir)
    if end is None:
        return None
    validating = sum(r.get("seconds", 0.0) for r in read_log(run_dir) if r.get("kind") == "validation")
    return round((end["elapsed_s"] - validating) / 60.0, 2)


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``end`` record when it ended and wrote ``best.pt``, else None."""
    ends = [r for r in read_log(run_dir) if r.get("kind") == "end"]
    return ends[-1] if ends and (run_dir / "best.pt").is_file() else None


def command(run: Run, data: Path, split: Path, cache: Path) -> list[str]:
    """The ``synthct train`` command line of ``run`` (every setting the benchmark changes is a ``--set``)."""
    settings = [f"train.num_threads={run.threads}", f"data.cache_dir={cache}", "logging.progress=false",
                *run.overrides]
    return [sys.executable, "-m", "synthct", "train", "--config", str(run.config), "--data", str(data), "--region",
            run.region, "--split", str(split), "--out", str(run.out), *[x for s in settings for x in ("--set", s)]]


def launch(run: Run, argv: list[str]) -> subprocess.Popen:
    """Start ``argv`` with output in ``run.out/train.out``, pinned to ``run.cpus`` when given."""
    run.out.mkdir(parents=True, exist_ok=True)
    handle = open(run.out / "train.out", "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    cpus = run.cpus
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=pin)
    handle.close()
    return process


def run_all(runs: list[Run], argvs: list[list[str]], concurrent: bool, say: Callable[[str], None],
            poll_s: float = 30.0) -> None:
    """Run the commands (together or in turn), printing each run's latest step and validation every ``poll_s``;
    raise with the log's tail when one fails."""
    groups = [list(range(len(runs)))] if concurrent else [[i] for i in range(len(runs))]
    for group in groups:
        processes = {i: launch(runs[i], argvs[i]) for i in group}
        started = time.monotonic()
        last = started
        while any(p.poll() is None for p in processes.values()):
            time.sleep(1.0)
            if time.monotonic() - last >= poll_s:
                last = time.monotonic()
                for i in group:
                    say(f"  {runs[i].name}: {progress_line(runs[i].out)} ({(last - started) / 60:.1f} min)")
        for i, process in processes.items():
            if process.returncode != 0:
                tail = "\n".join((runs[i].out / "train.out").read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"{runs[i].name}: synthct train exited {process.returncode}:\n{tail}")


def progress_line(run_dir: Path) -> str:
    """``step ≥ N, validation MAE x HU at step M`` from the run's log so far (steps are logged every
    ``logging.log_every_steps`` and at each validation)."""
    records = read_log(run_dir)
    steps = [r["step"] for r in records if r.get("kind") in ("train", "validation")]
    vals = [r for r in records if r.get("kind") == "validation"]
    text = f"step ≥ {max(steps)}" if steps else "starting"
    if vals and vals[-1].get("mae") is not None:
        text += f", validation MAE {vals[-1]['mae']:.1f} HU at step {vals[-1]['step']}"
    return text


def calibrate(runs: list[Run], data: Path, split: Path, caches: dict[str, Path], concurrent: bool,
              say: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Seconds per step and before the first step of each run, from a :data:`CALIBRATION_STEPS`-step run without
    validation (``<run>/../calibration/<name>``); kept in ``calibration.json`` there and reused while the config,
    overrides, cores and threads are the same."""
    results: dict[str, dict[str, float]] = {}
    todo, argvs = [], []
    for run in runs:
        folder = run.out.parent / "calibration" / run.name
        key = {"config": str(run.config), "overrides": list(run.overrides), "cpus": sorted(run.cpus or []),
               "threads": run.threads, "concurrent": concurrent}
        saved = folder / "calibration.json"
        if saved.is_file() and json.loads(saved.read_text()).get("key") == key:
            results[run.name] = json.loads(saved.read_text())
            continue
        shutil.rmtree(folder, ignore_errors=True)
        probe = Run(run.name, run.config, run.region, folder, [
            *run.overrides, f"train.max_steps={CALIBRATION_STEPS}", "train.max_minutes=0",
            "validation.every_steps=0", "validation.every_epochs=0", "validation.at_end=false",
            "logging.log_every_steps=1", "logging.tensorboard=false"], run.cpus, run.threads)
        todo.append((probe, key))
        argvs.append(command(probe, data, split, caches[run.name]))
    if todo:
        say(f"calibration: {CALIBRATION_STEPS} steps of {', '.join(p.name for p, _ in todo)}")
        run_all([p for p, _ in todo], argvs, concurrent, say)
    for probe, key in todo:
        records = read_log(probe.out)
        times = [r["elapsed_s"] for r in records if r.get("kind") == "train"]
        gaps = [b - a for a, b in itertools.pairwise(times)][2:]  # the first steps warm up
        result = {"step_s": round(statistics.median(gaps), 3), "first_step_elapsed_s": round(times[0], 1),
                  "key": key}
        write_json_atomic(probe.out / "calibration.json", result)
        results[probe.name] = result
    return results


def validation_every(budget_s: float, calibration: dict[str, float], validations: int) -> int:
    """``validation.every_steps`` for ``validations`` validations and the final one to split the budget's training
    time (less the start-up before the first step) into equal parts."""
    training_s = budget_s - calibration["first_step_elapsed_s"]
    if training_s <= 0:
        return 1
    return max(1, math.floor(training_s / (validations + 1) / calibration["step_s"]))
