"""``synthct train``: train the 3D Pix2Pix (SwinUNETR generator) on paired MR/CT of one region.

    synthct train --config paper --data DIR --region brain --out runs/NAME [--set key=value ...]
                  [--split split.json] [--resume]

Distributed: ``torchrun --nproc_per_node N -m synthct train ...`` (gloo on CPU, NCCL on CUDA). torch is imported
only inside :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synthct.train.config import Config

log = logging.getLogger("synthct.train")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DIVERGED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file, or the name of a bundled one (paper, cpu_smoke, tiny: "
                        "configs/NAME.yaml); defaults: the paper's values; optional with --resume, which starts "
                        "from the checkpoint's config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr_generator=2e-4 (repeatable; YAML values)")
    parser.add_argument("--data", type=Path, help="dataset folder (SynthRAD layout; see synthct data)")
    parser.add_argument("--region", help="brain | pelvis | hn | th | ab")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, config.yaml)")
    parser.add_argument("--split", type=Path, help="train/validation split JSON (default: a seeded 80/20 split, "
                        "written to the run folder)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (model, optimisers, "
                        "step, RNG and sampler state)")


def _resolve_config(args: argparse.Namespace) -> Config:
    from synthct.train.config import ConfigError, diff_configs, load_config

    from synthct.regions import canonical_region

    base = None
    checkpoint_config = None
    if args.resume:
        from synthct.train.checkpoint import load_checkpoint

        last = args.out / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume: {last} does not exist (nothing to resume)")
        checkpoint_config = load_checkpoint(last)["config"]
        base = checkpoint_config
    elif args.config is None:
        raise ConfigError("--config FILE|NAME is required (--config paper: the paper's values)")
    assignments: dict[str, str] = {}
    if args.data is not None:
        assignments["data.root"] = str(args.data.resolve())
    if args.split is not None:
        assignments["data.split"] = str(args.split.resolve())
    if args.region is not None:
        try:
            assignments["region"] = canonical_region(args.region)
        except ValueError as exc:
            raise ConfigError(f"--region: {exc}") from exc
    elif base is None:
        raise ConfigError("--region is required (brain, pelvis, hn, th or ab)")
    config = load_config(args.config, args.overrides, base=base, assignments=assignments)
    if checkpoint_config is not None:
        fixed = [key for key in diff_configs(checkpoint_config, config.to_dict())
                 if key.startswith("model.") or key in ("region", "data.patch_size")]
        if fixed:
            raise ConfigError(f"--resume: {', '.join(fixed)} differ from the checkpoint's config; a run cannot "
                              "change its network, region or patch size")
        changed = diff_configs(checkpoint_config, config.to_dict())
        if changed:
            log.warning("resuming with changed config keys: %s", ", ".join(changed))
    return config


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    from synthct.train.checkpoint import CheckpointError
    from synthct.train.config import ConfigError

    try:
        config = _resolve_config(args)
    except (ConfigError, CheckpointError) as exc:
        print(f"synthct train: config error: {exc}", file=sys.stderr)
        return EXIT_ERROR

    from synthct.train.trainer import DataProblem, Trainer, TrainingDiverged

    from synthct.dataset import DatasetError

    try:
        result = Trainer(config, args.out, resume=args.resume, started=started).run()
    except TrainingDiverged as exc:
        print(f"synthct train: training diverged: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (DatasetError, DataProblem, CheckpointError, ConfigError) as exc:
        print(f"synthct train: {exc}", file=sys.stderr)
        return EXIT_ERROR
    best = f"{result.best_mae:.2f} HU" if result.best_mae is not None else "n/a"
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.last_metrics.items())
    print(f"synthct train: {result.stopped} at step {result.step} (epoch {result.epoch}) in {result.seconds:.0f} s; "
          f"best validation MAE {best}; last validation: {metrics or 'none'}; run folder {args.out}")
    if result.stopped == "signal":
        print(f"synthct train: stopped by a signal; continue with: synthct train --out {args.out} --resume")
    return EXIT_OK
