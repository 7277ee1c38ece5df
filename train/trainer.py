"""The training loop: 3D Pix2Pix (SwinUNETR or residual-encoder U-Net generator, conditional PatchGAN when
``loss.lambda_gan`` > 0), DDP, checkpoints, validation.

The loop's parts live beside it: one optimisation step in :mod:`synthct.train.step`, process settings (allocator, heap
trim, locale, seeding, signals) in :mod:`synthct.train.process`, the wall-clock budget in :mod:`synthct.train.budget`.
Rank 0 alone
writes checkpoints, logs and validates.

Run folder: ``config.yaml`` (resolved config), ``split.json``, ``last.pt``, ``best.pt`` (lowest validation MAE),
``log.jsonl``, ``validation/step_*.json``, ``tensorboard/``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from synthct.train.augment import apply_batch_affine, apply_batch_intensity
from synthct.train.budget import Clock, TimeBudget, final_reserve_s
from synthct.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    capture_rng,
    load_checkpoint,
    require_architecture,
    restore_rng,
    save_checkpoint,
    versions,
)
from synthct.train.config import Config, dump_config
from synthct.train.data import (
    TrainVolume,
    ValidationVolume,
    augment_on_device,
    make_epoch_loader,
    mapped_train_volume,
    mapped_validation_volume,
)
from synthct.train.distributed import (
    DistInfo,
    any_rank,
    barrier,
    cleanup,
    init_distributed,
    max_over_ranks,
    select_device,
)
from synthct.train.logs import RunLog
from synthct.train.process import StopSignals, peak_rss_mb, seed_everything, trim_heap, tune_cpu_allocator
from synthct.train.step import (
    StepModels,
    TrainingDiverged,
    build_step_models,
    lr_factor,
    prepare_inputs,
    train_step,
    uses_gan,
)
from synthct.train.validate import ValidationResult, count_windows, make_predictor, slice_grid, validate
from tqdm import tqdm

from synthct.atomic import write_text_atomic
from synthct.cache import (
    CacheError,
    cases_geometry,
    default_cache_dir,
    open_cache,
    prepare_cache,
    settings_for_patch,
)
from synthct.dataset import DatasetError, make_split, read_split, write_split
from synthct.geometry import NetworkGeometry

__all__ = ["STOP_REASONS", "DataProblem", "TrainResult", "Trainer", "TrainingDiverged", "steps_per_epoch"]

log = logging.getLogger("synthct.train")


STOP_REASONS = ("signal", "max_steps", "time_budget")


class DataProblem(ValueError):
    """The dataset cannot be trained on (too few cases, a case without CT, …)."""


@dataclass
class TrainResult:
    """How a run ended: steps/epochs done, why it stopped, the best validation MAE and the last metrics."""

    step: int
    epoch: int
    stopped: str
    """completed | max_steps | time_budget | signal"""
    best_mae: float | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def steps_per_epoch(n_train: int, config: Config, world_size: int) -> int:
    """Steps (per rank) of one epoch: n_train × patches_per_volume patches over all ranks."""
    patches = n_train * config.data.patches_per_volume
    return max(1, math.ceil(patches / (config.train.batch_size * world_size)))


class Trainer:
    """Trains one run. ``clock`` gives the time (``time.monotonic``; tests pass a fake one), ``started`` the
    clock's reading when the command started (default: now), from which ``train.max_minutes`` counts."""

    def __init__(self, config: Config, run_dir: str | Path, *, resume: bool = False,
                 started: float | None = None, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.clock = clock
        self.started = clock() if started is None else started
        self.budget = TimeBudget(config.train.max_minutes * 60.0, self.started, clock)
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.best_mae: float | None = None
        self.best_cases: int | None = None
        """Number of validation cases best_mae was measured on."""
        self.last_metrics: dict[str, float] = {}
        self.last_validation_step = -1
        self.validation_estimate_s: float | None = None
        self.step_estimate_s: float | None = None
        self.checkpoint_estimate_s = 2.0
        self.total_steps = 0
        self.info = DistInfo()
        self.models: StepModels | None = None
        self.train_volumes: list[TrainVolume] = []
        self.val_volumes: list[ValidationVolume] = []
        self.geometry: NetworkGeometry | None = None
        """Training geometry (canonical orientation, median training spacing): saved in checkpoints for export."""
        self.run_log: RunLog | None = None

    # -------------------------------------------------------------------------------------------------- set-up
    def _setup_process(self) -> torch.device:
        requested = self.config.train.device
        kind = "cuda" if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()) else "cpu"
        self.info = init_distributed(kind)
        threads = self.config.train.num_threads
        if threads:
            torch.set_num_threads(threads)
        elif kind == "cpu" and self.info.local_world_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.info.local_world_size))
        device = select_device(requested, self.info)
        if device.type == "cpu":
            tune_cpu_allocator()
        else:  # fixed 64³ shapes: let cuDNN pick its fastest kernels; TF32 matmuls on Ampere and later
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
        return device

    def _load_split(self, case_ids: Sequence[str]) -> dict[str, Any]:
        data = self.config.data
        run_split = self.run_dir / "split.json"
        if data.split:
            split = read_split(data.split)
        elif self.resume and run_split.is_file():
            split = read_split(run_split)
        else:
            if len(case_ids) < 2:
                raise DataProblem(f"{data.root}: found {len(case_ids)} case(s) of region {self.config.region!r}; "
                                  "training needs at least 2 (one for training, one for validation)")
            split = make_split(case_ids, data.val_fraction, data.split_seed)
        if self.info.is_main:
            write_split(run_split, split)
        return split

    def _load_data(self, device: torch.device) -> None:
        """Rank 0 builds or refreshes the dataset cache (synthct.cache) while the others wait, then every rank
        opens the training volumes as memory maps (rank 0 also the validation volumes)."""
        config = self.config
        data = config.data
        if not data.root:
            raise DataProblem("no dataset folder given (--data DIR or data.root)")
        rule = data.mr_normalisation
        settings = settings_for_patch(config.region, data.patch_size, rule.rule, rule.percentile)
        cache_dir = Path(data.cache_dir) if data.cache_dir else default_cache_dir(data.root, config.region)
        show = self.info.is_main and config.logging.progress
        index = None
        failure: Exception | None = None
        if self.info.is_main:
            try:
                index = prepare_cache(data.root, settings, cache_dir, progress=show,
                                      workers=data.cache_workers or min(4, os.cpu_count() or 1))
            except (DatasetError, CacheError, OSError) as exc:
                failure = exc
        if any_rank([failure is not None], self.info, device)[0]:  # every rank learns of rank 0's failure
            if failure is not None:
                raise failure
            raise DataProblem("rank 0 could not prepare the dataset cache (see its error)")
        if index is None:
            index = open_cache(data.root, settings, cache_dir)
        case_ids = list(index.cases)
        if len(case_ids) < 2:
            raise DataProblem(f"{data.root}: found {len(case_ids)} case(s) of region {config.region!r}; "
                              "training needs at least 2 (one for training, one for validation)")
        split = self._load_split(case_ids)
        missing = [f"split: case {i} not found in the dataset" for i in [*split["train"], *split["val"]]
                   if i not in index.cases]
        if missing:
            raise DatasetError(missing)
        self.geometry = cases_geometry(index, split["train"])
        self.train_volumes = [mapped_train_volume(index.cases[i]) for i in split["train"]]
        if self.info.is_main:
            self.val_volumes = [mapped_validation_volume(index.cases[i]) for i in split["val"]]
        log.info("%d training and %d validation cases (region %s), memory-mapped from %s", len(split["train"]),
                 len(split["val"]), config.region, cache_dir)

    def _restore(self, models: StepModels) -> None:
        path = self.run_dir / "last.pt"
        checkpoint = load_checkpoint(path, map_location=models.device)
        require_architecture(checkpoint, self.config.to_dict()["model"], path)
        models.generator.load_state_dict(checkpoint["generator"])
        models.optimizer_g.load_state_dict(checkpoint["optimizer_g"])
        if models.discriminator is not None and models.optimizer_d is not None:
            if checkpoint["discriminator"]:
                models.discriminator.load_state_dict(checkpoint["discriminator"])
                models.optimizer_d.load_state_dict(checkpoint["optimizer_d"])
            else:  # the run so far had no adversarial term: the discriminator starts now
                log.info("%s holds no discriminator (trained with loss.lambda_gan 0): a new one starts", path)
        if checkpoint["scaler"]:
            models.scaler.load_state_dict(checkpoint["scaler"])
        self.step = int(checkpoint["step"])
        self.epoch = int(checkpoint["epoch"])
        sampler = checkpoint["rng"].get("sampler", {})
        self.step_in_epoch = int(sampler.get("step_in_epoch", 0))
        if int(sampler.get("world_size", self.info.world_size)) != self.info.world_size:
            log.warning("resuming with %d ranks, checkpoint written with %s: patch sampling differs from an "
                        "uninterrupted run", self.info.world_size, sampler.get("world_size"))
        best = checkpoint.get("best_mae")
        self.best_mae = float(best) if best is not None else None
        best_cases = checkpoint.get("best_cases")
        self.best_cases = int(best_cases) if best_cases is not None else None
        if self.best_mae is not None and self.best_cases is None:  # a checkpoint from before best_cases was saved
            log.warning("%s does not say how many validation cases its best MAE (%.2f HU) was measured on: the next "
                        "validation starts a new best", path, self.best_mae)
            self.best_mae = None
        self.last_metrics = {k: float(v) for k, v in checkpoint["metrics"].items()}
        self.last_validation_step = int(checkpoint.get("last_validation_step", -1))
        if self.info.is_main:
            restore_rng(checkpoint["rng"])
        else:
            seed_everything(self.config.train.seed + 1000 * self.info.rank + self.step)
        log.info("resumed from %s: step %d, epoch %d (+%d steps)", path, self.step, self.epoch, self.step_in_epoch)

    # ------------------------------------------------------------------------------------------- checkpoints
    def _checkpoint(self) -> dict[str, Any]:
        assert self.models is not None
        rng = capture_rng()
        rng["sampler"] = {"seed": self.config.train.seed, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                          "world_size": self.info.world_size}
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "generator": self.models.generator.state_dict(),
            "discriminator": self.models.discriminator.state_dict() if self.models.discriminator is not None else {},
            "optimizer_g": self.models.optimizer_g.state_dict(),
            "optimizer_d": self.models.optimizer_d.state_dict() if self.models.optimizer_d is not None else {},
            "scaler": self.models.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": rng,
            "metrics": dict(self.last_metrics),
            "best_mae": self.best_mae,
            "best_cases": self.best_cases,
            "last_validation_step": self.last_validation_step,
            "versions": versions(),
            "geometry": self.geometry.to_dict() if self.geometry is not None else None,
        }

    def _save(self, name: str) -> None:
        if not self.info.is_main:
            return
        began = self.clock()
        save_checkpoint(self.run_dir / name, self._checkpoint())
        self.checkpoint_estimate_s = max(self.checkpoint_estimate_s, self.clock() - began)

    # -------------------------------------------------------------------------------------------- validation
    def _validation_cases(self, final: bool) -> list[ValidationVolume]:
        """Every validation case for the final validation, else the first ``validation.max_cases`` (0: all)."""
        limit = self.config.validation.max_cases
        return list(self.val_volumes) if final or not limit else list(self.val_volumes[:limit])

    def _validate(self, final: bool = False) -> None:
        """Rank 0 validates (others wait); writes the JSON, logs, best.pt when the MAE improves (compared between
        validations of the same cases: the subset during training, all of them at the end)."""
        assert self.models is not None
        self.last_validation_step = self.step
        volumes = self._validation_cases(final)
        if self.info.is_main and volumes:
            trim_heap()  # validation starts from the model's memory, not from training's high-water mark
            began = self.clock()
            result = validate(self.models.generator, volumes, self.config, self.models.device,
                              self.models.amp_dtype)
            # the time budget reserves room for the final validation, over every case
            seconds = self.clock() - began
            self.validation_estimate_s = seconds * len(self.val_volumes) / len(volumes) * 1.1 + 1.0
            if not self._validation_counts:
                self.budget.exclude(seconds)
            self.last_metrics = dict(result.mean)
            self._log_validation(result, "_all" if final and self.config.validation.max_cases else "")
            mae = result.mean.get("mae")
            comparable = self.best_cases in (None, len(volumes))
            if comparable:
                self.best_cases = len(volumes)
            if mae is not None and comparable and (self.best_mae is None or mae < self.best_mae):
                self.best_mae = mae
                self._save("best.pt")
                log.info("step %d: validation MAE %.2f HU (best so far) → best.pt", self.step, mae)
            else:
                log.info("step %d: validation MAE %.2f HU (best %.2f)", self.step, mae or float("nan"),
                         self.best_mae or float("nan"))
        barrier(self.info)

    def _log_validation(self, result: ValidationResult, suffix: str = "") -> None:
        assert self.run_log is not None
        payload = {"step": self.step, "epoch": self.epoch, "seconds": result.seconds, "mean": result.mean,
                   "aggregates": result.aggregates, "cases": result.per_case,
                   "elapsed_s": self.clock() - self.started}
        self.run_log.validation_file(self.step, payload, suffix)
        self.run_log.record("validation", self.step, {"epoch": self.epoch, **result.mean, "seconds": result.seconds,
                                                       "elapsed_s": payload["elapsed_s"]})
        self.run_log.scalars("val", self.step, result.mean)
        if self.config.logging.images and result.first_sct_hu is not None and self.val_volumes:
            first = self.val_volumes[0]
            self.run_log.image(f"val/{first.case_id}_mr_sct_ct", self.step,
                               slice_grid(first.mr, result.first_sct_hu, first.ct_hu))
        self.run_log.flush()

    def _estimate_validation(self) -> float:
        """Seconds a validation (+ checkpoint) takes: measured once it ran, else timed on one batch of windows."""
        assert self.models is not None
        if not self.val_volumes:
            return 0.0
        if self.validation_estimate_s is None:
            batch = self.config.validation.batch_size
            patch = self.config.data.patch_size
            predictor = make_predictor(self.models.generator, self.models.device, self.models.amp_dtype)
            self.models.generator.eval()
            windows = np.full((batch, 1, *patch), -1.0, dtype=np.float32)
            timings = []
            for _ in range(2):  # the first call also sets up kernels: the second is the one to go by
                began = self.clock()
                predictor(windows)
                timings.append(self.clock() - began)
            per_batch = timings[-1]
            self.models.generator.train()
            volumes = self._validation_cases(final=True)
            batches = sum(math.ceil(count_windows([v], self.config) / batch) for v in volumes)
            self.validation_estimate_s = 1.2 * per_batch * batches + 1.0 * len(volumes) + 1.0
            log.info("validation estimated at %.0f s (%d batches of %d windows)", self.validation_estimate_s,
                     batches, batch)
        return self.validation_estimate_s

    # ------------------------------------------------------------------------------------------------- loop
    def _budgeted(self) -> bool:
        """Whether a time budget applies here (rank 0 decides; the ranks share its verdict)."""
        return self.budget.enabled and self.info.is_main

    @property
    def _validation_counts(self) -> bool:
        """Whether validation time counts against ``train.max_minutes`` (not with
        ``train.budget_excludes_validation``)."""
        return not self.config.train.budget_excludes_validation

    def _reserve_s(self) -> float:
        """Seconds kept for the end of the run (final validation when ``validation.at_end`` and it counts against
        the budget, last checkpoint)."""
        final_counts = self.config.validation.at_end and self._validation_counts
        return final_reserve_s(self._estimate_validation, self.checkpoint_estimate_s, final_counts)

    def _out_of_time(self, upcoming: float) -> bool:
        """True when ``upcoming`` seconds of work would leave no room for the final validation and checkpoint."""
        return self._budgeted() and self.budget.exceeded(upcoming, self._reserve_s())

    def _validation_due(self, epoch_done: bool) -> bool:
        validation = self.config.validation
        if validation.every_steps and self.step % validation.every_steps == 0:
            return True
        return bool(epoch_done and validation.every_epochs and self.epoch % validation.every_epochs == 0)

    def run(self) -> TrainResult:
        """Train until the epochs, ``max_steps`` or ``max_minutes`` run out or a signal arrives."""
        device = self._setup_process()
        try:
            with StopSignals() as signals:
                return self._run(device, signals)
        finally:
            if self.run_log is not None:
                self.run_log.close()
            cleanup(self.info)

    def _run(self, device: torch.device, signals: StopSignals) -> TrainResult:
        config = self.config
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "config.yaml", dump_config(config))
        seed_everything(config.train.seed)
        self._load_data(device)
        torch.manual_seed(config.train.seed)  # identical initial weights on every rank
        self.models = models = build_step_models(config, device, self.info)
        seed_everything(config.train.seed + 1000 * self.info.rank)
        if self.resume:
            self._restore(models)
        if self.info.is_main:
            self.run_log = RunLog(self.run_dir, config.logging.tensorboard)
        per_epoch = steps_per_epoch(len(self.train_volumes), config, self.info.world_size)
        total_steps = config.train.epochs * per_epoch
        if config.train.max_steps:
            total_steps = min(total_steps, config.train.max_steps)
        self.total_steps = total_steps
        sync = (lambda ok: not any_rank([not ok], self.info, device)[0]) if self.info.enabled else None
        stopped = "completed"
        bar = tqdm(total=total_steps, initial=min(self.step, total_steps), desc="training", unit="step",
                   disable=not (self.info.is_main and config.logging.progress), dynamic_ncols=True)
        running: dict[str, list[float]] = {}
        on_device = augment_on_device(config, device)
        loader = make_epoch_loader(self.train_volumes, config, seed=config.train.seed, rank=self.info.rank,
                                   start_epoch=self.epoch, start_step=self.step_in_epoch, steps_per_epoch=per_epoch,
                                   crops=on_device, pin_memory=device.type == "cuda" and config.data.pin_memory)
        batches = iter(loader)  # one iterator for the whole run: the loader's workers persist across epochs
        try:
            while self.epoch < config.train.epochs and stopped == "completed":
                exhausted = True
                for batch in batches:
                    exhausted = False
                    flags = [1.0 if flag else 0.0 for flag in self._stop_flags(signals)]
                    shared = max_over_ranks([*flags, self._progress(total_steps)], self.info, device)
                    reasons = [value > 0.5 for value in shared[: len(STOP_REASONS)]]
                    if any(reasons):
                        stopped = STOP_REASONS[reasons.index(True)]
                        break
                    learning_rate_factor = lr_factor(config, self.step, shared[-1])
                    for optimizer, base in ((models.optimizer_g, config.optim.lr_generator),
                                            (models.optimizer_d, config.optim.lr_discriminator)):
                        for group in optimizer.param_groups if optimizer is not None else []:
                            group["lr"] = base * learning_rate_factor
                    began = self.clock()
                    use_gan = uses_gan(config) and self.step >= config.loss.gan_warmup_steps
                    if on_device:
                        batch = apply_batch_affine({key: value.to(device, non_blocking=True)
                                                    for key, value in batch.items()}, config.data.patch_size)
                    batch = self._augment_intensity(batch, device)
                    mr, ct, mask = prepare_inputs(models, batch["mr"], batch["ct"], batch["mask"])
                    try:
                        values = train_step(models, mr, ct, config, use_gan, sync, mask)
                        values["lr"] = config.optim.lr_generator * learning_rate_factor
                    except TrainingDiverged as exc:
                        kept = self.run_dir / "last.pt"
                        where = f"{kept} (step {self._saved_step(kept)}) is kept" if kept.is_file() else \
                            "no checkpoint had been written yet"
                        raise TrainingDiverged(f"step {self.step + 1}: {exc}; training stopped, the last good "
                                               f"checkpoint {where}") from None
                    self.step += 1
                    self.step_in_epoch += 1
                    elapsed = self.clock() - began
                    self.step_estimate_s = elapsed if self.step_estimate_s is None else \
                        0.8 * self.step_estimate_s + 0.2 * elapsed
                    self._log_step(values, running, bar)
                    epoch_done = self.step_in_epoch >= per_epoch
                    if epoch_done:
                        self.epoch += 1
                        self.step_in_epoch = 0
                    every = config.train.checkpoint_every_steps
                    if epoch_done or (every and self.step % every == 0):
                        self._save("last.pt")
                    if self._validation_due(epoch_done):
                        counts = self._budgeted() and self._validation_counts
                        upcoming = self._estimate_validation() if counts else 0.0
                        no_time = any_rank([self._out_of_time(upcoming)], self.info, device)[0]
                        if not no_time:
                            self._validate()
                    if epoch_done:
                        exhausted = False
                        break
                    exhausted = True
                if exhausted:
                    break
        finally:
            bar.close()
            del batches, loader  # stops the loader's workers before the final validation
        final_due = self.last_validation_step != self.step or (
            config.validation.max_cases and len(self.val_volumes) > config.validation.max_cases)
        if config.validation.at_end and final_due and stopped != "signal":
            self._validate(final=True)
        self._save("last.pt")
        result = TrainResult(self.step, self.epoch, stopped, self.best_mae, dict(self.last_metrics),
                             self.clock() - self.started)
        rss = peak_rss_mb()
        rss_max = max_over_ranks([rss], self.info, device)[0]
        if self.run_log is not None:
            self.run_log.record("end", self.step, {"epoch": self.epoch, "stopped": stopped, "best_mae": self.best_mae,
                                                   "elapsed_s": result.seconds, "peak_rss_mb_rank0": rss,
                                                   "peak_rss_mb_max_rank": rss_max})
        log.info("stopped (%s) at step %d, epoch %d after %.0f s; best validation MAE %s", stopped, self.step,
                 self.epoch, result.seconds, f"{self.best_mae:.2f} HU" if self.best_mae is not None else "n/a")
        return result

    def _augment_intensity(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """Mirroring and MR intensity augmentation (``data.augment``; train.augment), on the training device."""
        augment = self.config.data.augment
        settings = {"mirror": augment.mirror, "gamma_probability": augment.gamma_probability,
                    "bias_field_probability": augment.bias_field_probability,
                    "noise_probability": augment.noise_probability, "lowres_probability": augment.lowres_probability}
        if not any(settings.values()):
            return batch
        moved = {key: batch[key].to(device, non_blocking=True) for key in ("mr", "ct", "mask")}
        return apply_batch_intensity(moved, **settings)

    def _progress(self, total_steps: int) -> float:
        """Fraction of the run done: the larger of steps done / total steps and, with a time budget, of the
        training time used (the budget less the final validation and checkpoint)."""
        progress = self.step / max(total_steps, 1)
        if self._budgeted():
            progress = max(progress, self.budget.used(self._reserve_s()))
        return min(progress, 1.0)

    def _stop_flags(self, signals: StopSignals) -> list[bool]:
        """This rank's reasons to stop before the next step, in the order of :data:`STOP_REASONS`."""
        return [
            signals.received is not None,
            bool(self.config.train.max_steps and self.step >= self.config.train.max_steps),
            self._out_of_time(self.step_estimate_s or 0.0),
        ]

    @staticmethod
    def _saved_step(path: Path) -> int | str:
        try:
            return int(load_checkpoint(path)["step"])
        except Exception:  # the message must still be written
            return "?"

    def _log_step(self, values: dict[str, float], running: dict[str, list[float]], bar: tqdm) -> None:
        if not self.info.is_main:
            return
        for key, value in values.items():
            running.setdefault(key, []).append(value)
        if self.budget.enabled and self.step_estimate_s:  # the bar's total: the steps the budget leaves room for
            left = self.budget.steps_left(self._reserve_s(), self.step_estimate_s)
            bar.total = max(self.step, min(self.total_steps, self.step + left))
        bar.update(1)
        bar.set_postfix({"l1": f"{values['l1']:.4f}", "ssim": f"{values['ssim']:.3f}", "gan": f"{values['gan']:.3f}",
                         "d": f"{values['d']:.3f}", "ep": self.epoch}, refresh=False)
        if self.step % self.config.logging.log_every_steps == 0 and self.run_log is not None:
            means = {key: float(np.mean(v)) for key, v in running.items()}
            running.clear()
            self.run_log.record("train", self.step, {"epoch": self.epoch, **means,
                                                     "elapsed_s": self.clock() - self.started})
            self.run_log.scalars("train", self.step, means)

