"""``make demo`` trains a fixed number of steps (its result does not depend on the machine's speed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthct.train.config import load_config

from synthct import demo


class _Stop(Exception):
    pass


def _train_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> list[str]:
    commands: dict[str, list[str]] = {}

    def record(title: str, command: list[str], env: dict[str, str] | None = None) -> None:
        commands[title] = command
        if title.startswith("3."):
            raise _Stop

    monkeypatch.setattr(demo, "_run", record)
    with pytest.raises(_Stop):
        demo.main(["--out", str(tmp_path), *args])
    return commands["3. train"]


def _settings(command: list[str]) -> dict[str, str]:
    return dict(command[i + 1].split("=", 1) for i, item in enumerate(command) if item == "--set")


def test_demo_trains_a_fixed_number_of_steps_without_a_time_budget(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    command = _train_command(monkeypatch, tmp_path)
    settings = _settings(command)
    assert settings == {"train.max_steps": str(demo.DEMO_STEPS), "train.max_minutes": "0.0", "train.num_threads": "0"}
    assert demo.DEMO_STEPS > 0
    assert command[command.index("--config") + 1] == demo.DEMO_CONFIG  # a bundled config: works from a wheel
    assert load_config(demo.DEMO_CONFIG).model.architecture == "resenc_unet"  # the recipe that wins at this budget


def test_demo_time_budget_is_an_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(_train_command(monkeypatch, tmp_path, "--steps", "0", "--minutes", "9.5", "--threads", "1"))
    assert settings == {"train.max_steps": "0", "train.max_minutes": "9.5", "train.num_threads": "1"}
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--steps", "0"])  # no end at all: refused
