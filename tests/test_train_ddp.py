"""``torchrun --nproc_per_node 2`` on CPU (gloo): both ranks step, weights stay identical, one checkpoint writer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from synthct.train.checkpoint import load_checkpoint
from train_helpers import HANG_GUARD_S, REPO, subprocess_env, tiny_config, write_config, write_tiny_dataset

RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import synthct.train.trainer as trainer_module
    from synthct.train.config import load_config

    config_path, run_dir, report_dir = sys.argv[1:4]
    rank = int(os.environ["RANK"])
    saves, losses, prepared = [], [], []
    original_save, original_step = trainer_module.save_checkpoint, trainer_module.train_step
    original_prepare = trainer_module.prepare_cache

    def spy_prepare(*args, **kwargs):
        prepared.append(1)
        return original_prepare(*args, **kwargs)

    def spy_save(path, checkpoint):
        saves.append(os.path.basename(str(path)))
        return original_save(path, checkpoint)

    def spy_step(*args, **kwargs):
        values = original_step(*args, **kwargs)
        losses.append(values)
        return values

    trainer_module.save_checkpoint = spy_save
    trainer_module.train_step = spy_step
    trainer_module.prepare_cache = spy_prepare
    torch.manual_seed(0)
    trainer = trainer_module.Trainer(load_config(config_path), run_dir)
    result = trainer.run()
    generator = trainer.models.generator
    torch.save({name: p.detach().clone() for name, p in generator.state_dict().items()},
               os.path.join(report_dir, f"weights{rank}.pt"))
    with open(os.path.join(report_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"rank": rank, "world_size": trainer.info.world_size, "steps": len(losses), "losses": losses,
                   "result_step": result.step, "saves": saves, "validated": bool(trainer.val_volumes),
                   "prepared": len(prepared), "memmap": type(trainer.train_volumes[0].mr).__name__,
                   "cache": str(trainer.train_volumes[0].source.folder.parent.parent)}, handle)
    """
)


@pytest.mark.timeout(2 * HANG_GUARD_S)
def test_two_ranks_step_together_and_rank0_alone_writes(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=5)  # 4 training cases: one epoch = 2 steps per rank
    config_path = write_config(tmp_path / "c.yaml", tiny_config(
        data={"root": str(data)},
        train={"max_steps": 2, "epochs": 3, "checkpoint_every_steps": 1, "device": "cpu"},
        validation={"every_epochs": 0, "at_end": True, "batch_size": 1},
    ))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    run_dir, report = tmp_path / "run", tmp_path / "report"
    report.mkdir()
    process = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(config_path), str(run_dir), str(report)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["steps"] for r in ranks] == [2, 2]  # both ranks stepped
    assert [r["result_step"] for r in ranks] == [2, 2]
    # different patches per rank (per-rank sampler seeding) ...
    assert ranks[0]["losses"][0]["l1"] != ranks[1]["losses"][0]["l1"]
    # ... yet identical weights after the steps (gradients all-reduced)
    weights = [torch.load(report / f"weights{r}.pt", weights_only=True) for r in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    # the weights moved away from the common initialisation
    from synthct.train.models import build_generator

    torch.manual_seed(0)
    initial = build_generator(tiny_config()["model"]).state_dict()
    assert any(not torch.equal(initial[n], weights[0][n]) for n in initial)
    # one writer: rank 0 saved every checkpoint, rank 1 none; validation ran on rank 0 only
    assert ranks[1]["saves"] == [] and not ranks[1]["validated"]
    assert ranks[0]["saves"].count("last.pt") >= 2 and ranks[0]["validated"]
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint["step"] == 2 and checkpoint["rng"]["sampler"]["world_size"] == 2
    # the training geometry travels with the checkpoint (tiny dataset: LPS, 1 mm): export puts it in model.json
    assert checkpoint["geometry"] == {"orientation": "LPS", "spacing_zyx_mm": [1.0, 1.0, 1.0],
                                      "spacing_tolerance": 0.15}
    for name, tensor in checkpoint["generator"].items():
        assert torch.equal(tensor, weights[0][name]), name
    assert len(list((run_dir / "validation").glob("*.json"))) == 1
    # one cache, built by rank 0 alone, memory-mapped by both ranks
    assert [r["prepared"] for r in ranks] == [1, 0]
    assert [r["memmap"] for r in ranks] == ["memmap", "memmap"]
    assert ranks[0]["cache"] == ranks[1]["cache"] == str(data / ".synthct-cache" / "brain")
    assert (data / ".synthct-cache" / "brain" / "manifest.json").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no stray temporary files
