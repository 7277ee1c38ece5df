"""Peak memory of ``synthct train`` against the number of cases, anonymous and file-backed apart: the dataset cache's
memory maps keep the anonymous part flat.

    .venv/bin/python benchmarks/bench_train_memory.py --work /tmp/bench_memory [--cases 4 16] [--size medium]
                     [--baseline-repo /path/to/an/older/checkout] [--set validation.at_end=false]
                     [--validation-cases 1 3]

Generates ``max(--cases)`` brain phantoms of ``--size`` once (kept in ``--work``), makes one dataset per count (the
first N cases, linked), prepares each dataset's cache (``synthct data prepare``, timed, not measured), then runs
``synthct train --config configs/tiny.yaml --set train.max_steps=3`` per dataset in a fresh process and reads that
process's peak RSS (``os.wait4``: ru_maxrss, resident pages of every kind, the memory maps' included) and, sampled
from ``/proc/PID/status`` every ``--sample-ms``, the peaks of its anonymous (``RssAnon``: heap, arrays, tensors)
and file-backed (``RssFile``: the cache's memory maps, libraries) resident memory; only anonymous memory costs
the machine per rank and per worker (file pages are shared through the page cache and can be dropped). With
``--baseline-repo`` the same runs use that checkout's code too (e.g. one that preloads every volume).
``--validation-cases A B`` also measures the validation path alone (train.validate.validate over A, then B cached
validation volumes, a 1×1×1-convolution stand-in for the generator so that the model costs nothing), each in a
fresh process. Prints a table and a JSON line (last).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _phantoms(work: Path, count: int, size: str, repo: Path) -> Path:
    source = work / f"phantoms_{size}_{count}"
    if not (source / "Task1" / "brain").is_dir() or len(list((source / "Task1" / "brain").iterdir())) < count:
        shutil.rmtree(source, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "synthct", "phantom", "--out", str(source), "--region", "brain",
                        "--cases", str(count), "--size", size, "--no-progress"], check=True, cwd=repo, env=_env(repo))
    return source


def _subset(source: Path, work: Path, count: int) -> Path:
    """A dataset of the first ``count`` cases (symbolic links to the case folders)."""
    target = work / f"data_{count}"
    shutil.rmtree(target, ignore_errors=True)
    folder = target / "Task1" / "brain"
    folder.mkdir(parents=True)
    for case in sorted((source / "Task1" / "brain").iterdir())[:count]:
        (folder / case.name).symlink_to(case.resolve(), target_is_directory=True)
    return target


STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def _status_mb(pid: int) -> dict[str, float]:
    """The ``STATUS_FIELDS`` of ``/proc/PID/status`` in MB (empty once the process is gone)."""
    values: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in STATUS_FIELDS:
                    values[key] = int(rest.split()[0]) / 1024.0  # kB
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return {}
    return values


def _peak_rss_mb(command: list[str], repo: Path, sample_s: float = 0.02) -> tuple[dict[str, float], float, int]:
    """Peaks in MB of the child: ``rss`` (ru_maxrss), ``anon``, ``file``, ``shmem`` (each sampled on its own, so
    they need not peak at the same moment; ``anon_at_rss_peak``/``file_at_rss_peak``: the sample of the highest
    VmRSS); wall seconds; exit code."""
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=repo, env=_env(repo), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    peaks = {"anon": 0.0, "file": 0.0, "shmem": 0.0}
    at_peak = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # reaps the child (and its rusage) once it ended
        if pid:
            break
        sample = _status_mb(process.pid)
        if sample:
            for key, field in (("anon", "RssAnon"), ("file", "RssFile"), ("shmem", "RssShmem")):
                peaks[key] = max(peaks[key], sample.get(field, 0.0))
            if sample.get("VmRSS", 0.0) > at_peak["VmRSS"]:
                at_peak = {field: sample.get(field, 0.0) for field in at_peak}
        time.sleep(sample_s)
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if process.returncode:
        print(b"".join(chunks).decode("utf-8", "replace")[-3000:], file=sys.stderr)
    memory = {"rss": usage.ru_maxrss / 1024.0, **peaks, "anon_at_rss_peak": at_peak["RssAnon"],
              "file_at_rss_peak": at_peak["RssFile"]}
    return {key: round(value, 1) for key, value in memory.items()}, time.perf_counter() - began, process.returncode


VALIDATION_CHILD = """
import sys, torch
from synthct.cache import open_cache, settings_for_patch
from synthct.train.config import config_from_dict
from synthct.train.data import mapped_validation_volume
from synthct.train.validate import validate
data, count = sys.argv[1], int(sys.argv[2])
index = open_cache(data, settings_for_patch("brain", (64, 64, 64)))
volumes = [mapped_validation_volume(case) for case in list(index.cases.values())[:count]]
generator = torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1), torch.nn.Tanh())
result = validate(generator, volumes, config_from_dict({"validation": {"batch_size": 4}}), torch.device("cpu"))
print(len(result.per_case))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/synthct_bench_memory"))
    parser.add_argument("--cases", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--size", default="medium", choices=["small", "medium", "synthrad"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--baseline-repo", type=Path, default=None, help="also run this checkout's trainer")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the training runs (repeatable)")
    parser.add_argument("--sample-ms", type=float, default=20.0,
                        help="how often /proc/PID/status is sampled for the anonymous and file-backed peaks")
    parser.add_argument("--validation-cases", type=int, nargs="*", default=[],
                        help="also measure validation alone over these numbers of cases")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    source = _phantoms(args.work, max(args.cases), args.size, REPO)
    print(f"phantoms: {max(args.cases)} {args.size} brain cases in {time.perf_counter() - began:.0f} s", flush=True)
    repos = [("cache (this checkout)", REPO)]
    if args.baseline_repo is not None:
        repos.append((f"baseline {args.baseline_repo}", args.baseline_repo.resolve()))
    rows = []
    for count in args.cases:
        data = _subset(source, args.work, count)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "synthct", "data", "prepare", str(data), "--region", "brain",
                        "--no-progress"], check=True, cwd=REPO, env=_env(REPO), stdout=subprocess.DEVNULL)
        prepare_s = time.perf_counter() - began
        for label, repo in repos:
            run = args.work / f"run_{count}_{len(rows)}"
            shutil.rmtree(run, ignore_errors=True)
            command = [sys.executable, "-m", "synthct", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
                       "--data", str(data), "--region", "brain", "--out", str(run),
                       "--set", f"train.max_steps={args.steps}", "--set", "logging.progress=false",
                       *[item for o in args.overrides for item in ("--set", o)]]
            memory, seconds, code = _peak_rss_mb(command, repo, args.sample_ms / 1000.0)
            rows.append({"code": label, "cases": count, **{f"peak_{k}_mb": v for k, v in memory.items()},
                         "train_s": round(seconds, 1), "prepare_s": round(prepare_s, 1), "exit": code})
            print(f"{label:<40} {count:>3} cases: peak RSS {memory['rss']:8.1f} MB = anon {memory['anon']:8.1f} "
                  f"+ file {memory['file']:8.1f} (+ shmem {memory['shmem']:.1f}; at the RSS peak anon "
                  f"{memory['anon_at_rss_peak']:.1f}, file {memory['file_at_rss_peak']:.1f})  ({seconds:.0f} s; "
                  f"cache prepared in {prepare_s:.0f} s)", flush=True)
    validation_rows = []
    if args.validation_cases:
        data = args.work / f"data_{max(args.cases)}"
        for count in args.validation_cases:
            memory, seconds, code = _peak_rss_mb([sys.executable, "-c", VALIDATION_CHILD, str(data), str(count)],
                                                 REPO, args.sample_ms / 1000.0)
            validation_rows.append({"validation_cases": count, **{f"peak_{k}_mb": v for k, v in memory.items()},
                                    "seconds": round(seconds, 1), "exit": code})
            print(f"validation alone, {count:>3} cases: peak RSS {memory['rss']:8.1f} MB = anon "
                  f"{memory['anon']:8.1f} + file {memory['file']:8.1f}  ({seconds:.0f} s)", flush=True)
    summary: dict[str, object] = {"bench": "train_memory", "size": args.size, "steps": args.steps,
                                  "load_average": os.getloadavg(),
                                  "overrides": args.overrides, "rows": rows, "validation": validation_rows}
    for label, _repo in repos:
        mine = [r for r in rows if r["code"] == label]
        if len(mine) >= 2:
            growth = {kind: round(float(mine[-1][f"peak_{kind}_mb"]) - float(mine[0][f"peak_{kind}_mb"]), 1)
                      for kind in ("rss", "anon", "file")}
            summary[f"growth_mb {label}"] = growth
            print(f"{label}: {mine[0]['cases']} → {mine[-1]['cases']} cases: peak RSS {growth['rss']:+.1f} MB, "
                  f"anonymous {growth['anon']:+.1f} MB, file-backed {growth['file']:+.1f} MB")
    print(json.dumps(summary))
    return 0 if all(r["exit"] == 0 for r in rows + validation_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
