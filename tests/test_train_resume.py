"""A run killed with SIGKILL and restarted with ``--resume`` continues from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synthct.train.checkpoint import load_checkpoint
from synthct.train.config import Config, config_from_dict
from synthct.train.trainer import Trainer
from train_helpers import HANG_GUARD_S, REPO, subprocess_env, tiny_config, write_config, write_tiny_dataset


def _train(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "synthct", "train", *args]


def _optimizer_tensors(state: dict) -> dict[tuple[int, str], torch.Tensor]:
    return {(index, key): value for index, entry in state["state"].items() for key, value in entry.items()}


@pytest.mark.slow
@pytest.mark.timeout(4 * HANG_GUARD_S)
def test_kill9_then_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    """With the dataset cache prepared beforehand (synthct data prepare) and a persistent loader worker."""
    data = write_tiny_dataset(tmp_path / "data", n_cases=3)
    cache = tmp_path / "cache"
    env = subprocess_env()
    prepared = subprocess.run([sys.executable, "-m", "synthct", "data", "prepare", str(data), "--region", "brain",
                               "--out", str(cache), "--no-progress"], cwd=REPO, env=env, capture_output=True,
                              text=True, encoding="utf-8", timeout=HANG_GUARD_S)
    assert prepared.returncode == 0, prepared.stderr
    cache_files = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert len(cache_files) == 3 * 5
    config_path = write_config(tmp_path / "c.yaml", tiny_config(
        train={"max_steps": 40, "epochs": 40, "checkpoint_every_steps": 1},
        validation={"every_epochs": 0, "at_end": False},
        data={"augment": {"enabled": True, "probability": 0.5}, "cache_dir": str(cache), "num_workers": 1},
    ))
    common = ["--config", str(config_path), "--data", str(data), "--region", "brain"]
    run = tmp_path / "killed"
    process = subprocess.Popen(_train([*common, "--out", str(run)]), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + HANG_GUARD_S  # a hang guard, not a speed requirement
        while not (run / "last.pt").exists():
            assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
            assert time.monotonic() < deadline, f"no checkpoint within {HANG_GUARD_S} s (hung?)"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed = load_checkpoint(run / "last.pt")  # atomic writes: always a whole checkpoint
    step = int(killed["step"])
    assert 1 <= step < 40

    # resume for exactly one more step
    resumed = subprocess.run(_train(["--out", str(run), "--resume", "--set", f"train.max_steps={step + 1}"]),
                             cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run / 'last.pt'}: step {step}" in resumed.stderr
    after = load_checkpoint(run / "last.pt")
    assert after["step"] == step + 1
    # AdamW's per-parameter step counters continued from the checkpoint's (a fresh optimiser would be at 1)
    for index, entry in after["optimizer_g"]["state"].items():
        assert float(entry["step"]) == float(killed["optimizer_g"]["state"][index]["step"]) + 1 == step + 1

    # the same run without the interruption reaches the same weights and optimiser state
    straight = tmp_path / "straight"
    uninterrupted = subprocess.run(_train([*common, "--out", str(straight), "--set", f"train.max_steps={step + 1}"]),
                                   cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8",
                                   timeout=HANG_GUARD_S)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    reference = load_checkpoint(straight / "last.pt")
    assert reference["step"] == step + 1
    for name, tensor in reference["generator"].items():
        torch.testing.assert_close(after["generator"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    ref_state, got_state = (_optimizer_tensors(c["optimizer_g"]) for c in (reference, after))
    assert ref_state.keys() == got_state.keys()
    for key, tensor in ref_state.items():
        torch.testing.assert_close(got_state[key], tensor, rtol=1e-5, atol=1e-7, msg=str(key))
    assert after["rng"]["sampler"] == reference["rng"]["sampler"]
    # all three runs read the prepared cache; none rebuilt it
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == cache_files
    assert not (data / ".synthct-cache").exists()


def test_resume_compares_the_best_with_validations_of_the_same_cases(tmp_path: Path) -> None:
    """best.pt compares like with like across ``--resume``: a best MAE measured on the validation subset
    (``validation.max_cases``) is not compared with an MAE over every validation case after the restart."""
    data = write_tiny_dataset(tmp_path / "data", n_cases=4)  # 2 training, 2 validation cases

    def config(max_steps: int, every_epochs: int) -> Config:
        return config_from_dict(tiny_config(
            train={"max_steps": max_steps, "epochs": 5},  # batch 1: one epoch = 2 steps
            validation={"every_epochs": every_epochs, "at_end": True, "batch_size": 1, "max_cases": 1},
            data={"root": str(data), "val_fraction": 0.5},
        ))

    run = tmp_path / "run"
    first = Trainer(config(2, every_epochs=1), run)
    first.run()  # validates the subset at step 2 (best.pt), then every case at the end (not comparable)
    assert first.best_cases == 1 and first.best_mae is not None
    # one more step; the only validation is the final one, over both cases: not comparable with the subset's best
    resumed = Trainer(config(3, every_epochs=0), run, resume=True)
    result = resumed.run()
    assert result.step == 3 and len(list(run.glob("validation/step_00000003*.json"))) == 1
    assert resumed.best_cases == 1
    assert result.best_mae == first.best_mae
    assert load_checkpoint(run / "best.pt")["step"] == 2
    assert load_checkpoint(run / "last.pt").get("best_cases") == 1
