"""The training loop in-process: a short run end to end, NaN stop, signal stop (also SIGTERM to a ``synthct train``
child), bad input, the time budget (on a fake clock: no outcome here depends on the machine's speed)."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from synthct.train import losses
from synthct.train import trainer as trainer_module
from synthct.train.checkpoint import REQUIRED_KEYS, load_checkpoint
from synthct.train.config import config_from_dict
from synthct.train.process import StopSignals
from synthct.train.trainer import Trainer, TrainingDiverged
from train_helpers import HANG_GUARD_S, REPO, FakeClock, subprocess_env, tiny_config, write_config, write_tiny_dataset

from synthct.cli import main as synthct_main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), n_cases=3)


def test_short_run_writes_checkpoints_logs_and_validation(dataset: Path, tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "c.yaml", tiny_config(
        train={"max_steps": 2, "epochs": 5},  # 2 training cases, batch 1: an epoch is 2 steps
        validation={"every_epochs": 1, "at_end": True, "batch_size": 1},
        logging={"tensorboard": True, "progress": False, "log_every_steps": 1},
        data={"augment": {"enabled": True, "probability": 1.0}},
    ))
    out = tmp_path / "run"
    code = synthct_main(["train", "--config", str(config_path), "--data", str(dataset), "--region", "brain",
                         "--out", str(out)])
    assert code == 0
    for name in ("config.yaml", "split.json", "last.pt", "best.pt", "log.jsonl"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    checkpoint = load_checkpoint(out / "last.pt")
    assert set(REQUIRED_KEYS) <= set(checkpoint)
    assert checkpoint["step"] == 2 and checkpoint["epoch"] == 1
    assert checkpoint["config"]["region"] == "brain"
    assert checkpoint["config"]["data"]["patch_size"] == [64, 64, 64]
    assert checkpoint["config"]["model"]["feature_size"] == 12
    assert set(checkpoint["metrics"]) == {"mae", "psnr", "ssim"}
    assert torch.load(out / "best.pt", weights_only=True)["step"] == 2  # validated once, at the epoch's end
    validations = sorted((out / "validation").glob("step_*.json"))
    assert [p.name for p in validations] == ["step_00000002.json"]
    payload = json.loads(validations[0].read_text(encoding="utf-8"))
    assert set(payload["cases"]) == set(json.loads((out / "split.json").read_text(encoding="utf-8"))["val"])
    assert math.isfinite(payload["mean"]["mae"]) and payload["mean"]["mae"] > 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2]
    assert {"l1", "ssim", "gan", "total", "d"} <= set(train_records[0])
    assert records[-1]["kind"] == "end" and records[-1]["stopped"] == "max_steps"
    # the resolved config in the run folder is complete and valid
    saved = config_from_dict(__import__("yaml").safe_load((out / "config.yaml").read_text(encoding="utf-8")))
    assert saved.to_dict() == checkpoint["config"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dataset: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_dict(tiny_config(
        train={"max_steps": 6, "epochs": 10, "checkpoint_every_steps": 1},
        validation={"every_epochs": 0, "at_end": False},
        data={"root": str(dataset)},
    ))
    original = losses.generator_loss
    calls = {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        terms = original(*args, **kwargs)
        if calls["n"] == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(losses, "generator_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step 3: non-finite loss.*last good checkpoint .*last\.pt \(step 2\)"):
        Trainer(config, out).run()
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["generator"].values())


def test_sigterm_stops_after_the_step_and_saves(dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_dict(tiny_config(
        train={"max_steps": 50, "epochs": 50}, validation={"every_epochs": 0, "at_end": True},
        data={"root": str(dataset)},
    ))
    original = trainer_module.train_step
    steps = {"n": 0}
    seen: list[object] = []
    received: list[int] = []

    def step_then_signal(*args: object, **kwargs: object) -> dict[str, float]:
        values = original(*args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 1:
            seen.append(signal.getsignal(signal.SIGTERM))
            signal.raise_signal(signal.SIGTERM)
        return values

    def outer_handler(signum: int, _frame: object) -> None:
        received.append(signum)

    monkeypatch.setattr(trainer_module, "train_step", step_then_signal)
    previous = signal.signal(signal.SIGTERM, outer_handler)
    try:
        result = Trainer(config, tmp_path / "run").run()
        assert signal.getsignal(signal.SIGTERM) is outer_handler  # the caller's handler is back after the run
        signal.raise_signal(signal.SIGTERM)  # and it is the one that runs now
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]  # the trainer's own SIGTERM did not reach the caller's handler
    # during the run the trainer's own stop handler was installed (and, as the result shows, requested the stop)
    assert len(seen) == 1 and getattr(seen[0], "__func__", None) is StopSignals._handle
    assert result.stopped == "signal" and result.step == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1
    assert not (tmp_path / "run" / "validation").exists()  # no full validation when asked to stop


def test_stop_signals_request_a_stop_and_a_second_sigint_interrupts() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        assert signals.received is None
        signal.raise_signal(signal.SIGTERM)
        assert signals.received == "SIGTERM"  # a request, not an exception: the step in progress finishes
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # asked twice: stop at once
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.timeout(2 * HANG_GUARD_S)
def test_sigterm_to_a_training_process_saves_and_stops(dataset: Path, tmp_path: Path) -> None:
    """``kill -TERM`` of a real ``synthct train`` process once it has a checkpoint: the trainer's handler turns it
    into a stop after the step in progress, a checkpoint of that step, no final validation, exit code 0 and the
    resume hint (Python's default action would end the process with -SIGTERM and nothing saved)."""
    config_path = write_config(tmp_path / "c.yaml", tiny_config(
        train={"max_steps": 100_000, "epochs": 100_000, "checkpoint_every_steps": 1},
        validation={"every_epochs": 0, "at_end": True},
    ))
    run, stdout_path, stderr_path = tmp_path / "run", tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "synthct", "train", "--config", str(config_path), "--data", str(dataset),
               "--region", "brain", "--out", str(run)]
    with stdout_path.open("w", encoding="utf-8") as out, stderr_path.open("w", encoding="utf-8") as err:
        process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + HANG_GUARD_S  # a hang guard, not a speed requirement
            while not (run / "last.pt").exists():
                assert process.poll() is None, stderr_path.read_text(encoding="utf-8")[-3000:]
                assert time.monotonic() < deadline, f"no checkpoint within {HANG_GUARD_S} s (hung?)"
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=HANG_GUARD_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stdout, stderr = (path.read_text(encoding="utf-8") for path in (stdout_path, stderr_path))
    assert process.returncode == 0, stderr[-3000:]
    assert "SIGTERM received: stopping after the current step" in stderr
    assert f"stopped by a signal; continue with: synthct train --out {run} --resume" in stdout
    stopped_at = re.search(r"synthct train: signal at step (\d+)", stdout)
    assert stopped_at is not None, stdout
    step = int(stopped_at.group(1))
    assert 1 <= step < 100_000 and load_checkpoint(run / "last.pt")["step"] == step
    records = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records[-1]["kind"] == "end" and records[-1]["stopped"] == "signal" and records[-1]["step"] == step
    assert not (run / "validation").exists()  # no full validation when asked to stop


def test_bad_input_messages(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_case = write_tiny_dataset(tmp_path / "one", n_cases=1)
    config_path = write_config(tmp_path / "c.yaml", tiny_config())
    code = synthct_main(["train", "--config", str(config_path), "--data", str(one_case), "--region", "brain",
                         "--out", str(tmp_path / "r1")])
    assert code == 1
    assert "found 1 case(s)" in capsys.readouterr().err
    typo = write_config(tmp_path / "typo.yaml", {"optim": {"lr_generatr": 1e-4}})
    code = synthct_main(["train", "--config", str(typo), "--data", str(dataset), "--region", "brain",
                         "--out", str(tmp_path / "r2")])
    assert code == 1
    assert "did you mean 'optim.lr_generator'" in capsys.readouterr().err
    code = synthct_main(["train", "--config", str(config_path), "--data", str(dataset), "--region", "brain",
                         "--set", "trian.epochs=3", "--out", str(tmp_path / "r3")])
    assert code == 1
    assert "'trian'" in capsys.readouterr().err
    code = synthct_main(["train", "--out", str(tmp_path / "r4"), "--resume"])
    assert code == 1
    assert "nothing to resume" in capsys.readouterr().err
    code = synthct_main(["train", "--config", str(config_path), "--data", str(tmp_path / "missing"),
                         "--region", "brain", "--out", str(tmp_path / "r5")])
    assert code == 1
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


@pytest.mark.parametrize("at_end", [True, False])
def test_time_budget_stops_in_time_and_validates_at_the_end(dataset: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, at_end: bool) -> None:
    """A fake clock that advances 10 s per training step and never otherwise: the outcome is exact on any machine.

    Reserve for the end of the run: the checkpoint estimate (2 s) plus, with ``validation.at_end``, the estimate of
    the final validation over the 1 validation case (1 s per case + 1 s; its timed batch took 0 s on this clock).
    Before each step the trainer stops if elapsed + one step (10 s) + reserve > budget (53 s): with the validation
    at the end after 4 steps (40 + 10 + 4 > 53), without it after 5 (50 + 10 + 2 > 53, 40 + 10 + 2 ≤ 53).
    """
    clock = FakeClock()
    original = trainer_module.train_step

    def step_taking_10_s(*args: object, **kwargs: object) -> dict[str, float]:
        values = original(*args, **kwargs)
        clock.advance(10.0)
        return values

    monkeypatch.setattr(trainer_module, "train_step", step_taking_10_s)
    config = config_from_dict(tiny_config(
        train={"max_steps": 0, "epochs": 1000, "max_minutes": 53.0 / 60.0},
        validation={"every_epochs": 0, "at_end": at_end, "batch_size": 1},
        optim={"schedule": "cosine", "warmup_steps": 2},
        logging={"log_every_steps": 1},
        data={"root": str(dataset)},
    ))
    run = tmp_path / "run"
    trainer = Trainer(config, run, clock=clock)
    result = trainer.run()
    steps = 4 if at_end else 5
    assert (result.stopped, result.step, result.seconds) == ("time_budget", steps, 10.0 * steps)
    assert len(list(run.glob("validation/*.json"))) == (1 if at_end else 0)
    assert load_checkpoint(run / "last.pt")["step"] == steps
    # the cosine schedule runs over the budget's training time (53 s less the reserve), read on the same clock
    reserve = 4.0 if at_end else 2.0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    learning_rates = [r["lr"] for r in records if r["kind"] == "train"]
    expected = [config.optim.lr_generator * trainer_module.lr_factor(config, k, 10.0 * k / (53.0 - reserve))
                for k in range(steps)]
    assert learning_rates == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("excluded", [False, True])
def test_validations_off_the_budget_buy_the_same_training_time(dataset: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, excluded: bool) -> None:
    """Fake clock: 10 s per step, 100 s per validation (every 2 steps), a 53 s budget.

    ``train.budget_excludes_validation``: the validations run on top of the budget, so the run takes the 5 steps it
    would take without any validation (50 + 10 + 2 s checkpoint reserve > 53 stops it) and validates at steps 2, 4
    and at the end. Counted (the default): the first validation (100 s) spends the budget at step 2.
    """
    clock = FakeClock()
    step, validate = trainer_module.train_step, trainer_module.validate

    def step_taking_10_s(*args: object, **kwargs: object) -> dict[str, float]:
        values = step(*args, **kwargs)
        clock.advance(10.0)
        return values

    def validation_taking_100_s(*args: Any, **kwargs: Any) -> Any:
        result = validate(*args, **kwargs)
        clock.advance(100.0)
        return result

    monkeypatch.setattr(trainer_module, "train_step", step_taking_10_s)
    monkeypatch.setattr(trainer_module, "validate", validation_taking_100_s)
    config = config_from_dict(tiny_config(
        train={"max_steps": 0, "epochs": 1000, "max_minutes": 53.0 / 60.0, "budget_excludes_validation": excluded},
        validation={"every_epochs": 0, "every_steps": 2, "at_end": True, "batch_size": 1},
        logging={"log_every_steps": 1},
        data={"root": str(dataset)},
    ))
    run = tmp_path / "run"
    result = Trainer(config, run, clock=clock).run()
    steps, validations = (5, 3) if excluded else (2, 1)
    assert (result.stopped, result.step) == ("time_budget", steps)
    assert result.seconds == 10.0 * steps + 100.0 * validations  # wall clock: the validations took place
    assert len(list(run.glob("validation/*.json"))) == validations


def test_learning_rate_schedule() -> None:
    from synthct.train.trainer import lr_factor

    constant = config_from_dict({})
    assert lr_factor(constant, 0, 0.0) == lr_factor(constant, 500, 0.7) == 1.0  # the paper: constant
    cosine = config_from_dict({"optim": {"schedule": "cosine", "warmup_steps": 4, "min_lr_fraction": 0.1}})
    assert lr_factor(cosine, 0, 0.0) == pytest.approx(0.25)
    assert lr_factor(cosine, 3, 0.0) == pytest.approx(1.0)
    assert lr_factor(cosine, 10, 0.5) == pytest.approx(0.55)
    assert lr_factor(cosine, 10, 1.0) == pytest.approx(0.1)
    assert lr_factor(cosine, 10, 2.0) == pytest.approx(0.1)


def test_validation_subset_during_training_and_every_case_at_the_end(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=4)
    config = config_from_dict(tiny_config(
        train={"max_steps": 2, "epochs": 5},  # 2 training cases, batch 1: one epoch = 2 steps
        validation={"every_epochs": 1, "at_end": True, "batch_size": 1, "max_cases": 1},
        data={"root": str(data), "val_fraction": 0.5},
    ))
    trainer = Trainer(config, tmp_path / "run")
    trainer.run()
    files = sorted((tmp_path / "run" / "validation").glob("*.json"))
    assert [f.name for f in files] == ["step_00000002.json", "step_00000002_all.json"]
    subset, full = (json.loads(f.read_text(encoding="utf-8")) for f in files)
    assert len(subset["cases"]) == 1 and len(full["cases"]) == 2
    assert trainer.best_cases == 1  # best.pt compares like with like: the subset's MAE
    assert isinstance(trainer.val_volumes[0].mr, np.memmap)  # validation volumes are memory maps too


def test_train_rebuilds_a_corrupt_cache_with_a_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from synthct.cache import prepare_cache, settings_for_patch

    data = write_tiny_dataset(tmp_path / "data", n_cases=3)
    index = prepare_cache(data, settings_for_patch("brain", (64, 64, 64)), progress=False)
    damaged = index.cases["1BA002"].folder / "mr.npy"
    damaged.write_bytes(damaged.read_bytes()[:1000])  # a truncated array: never trained on
    config = config_from_dict(tiny_config(  # the step also exercises augmentation on the device (here the CPU)
        train={"max_steps": 1, "epochs": 1}, validation={"every_epochs": 0, "at_end": False},
        data={"root": str(data), "augment": {"enabled": True, "probability": 1.0, "where": "device"}}))
    steps: list[torch.Tensor] = []
    original = trainer_module.train_step

    def spy(models, mr, ct, *args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(mr)
        return original(models, mr, ct, *args, **kwargs)

    trainer_module.train_step = spy
    try:
        with caplog.at_level("WARNING", logger="synthct.cache"):
            result = Trainer(config, tmp_path / "run").run()
    finally:
        trainer_module.train_step = original
    assert result.step == 1 and steps[0].shape == (1, 1, 64, 64, 64)
    assert "1BA002" in caplog.text and "truncated or replaced" in caplog.text and "rebuilding the case" in caplog.text
    assert damaged.stat().st_size > 1000
