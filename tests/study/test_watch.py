"""Watching a training folder: checkpoints measured as they appear, resumably, capped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import RunConfig
from persona_collapse.core.errors import InputFileError
from persona_collapse.study.watch import find_checkpoints, watch_checkpoints


def _checkpoint(folder: Path, step: int) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


class _Builder:
    """Simulator backends recording the adapter each checkpoint was run with."""

    def __init__(self) -> None:
        self.adapters: list[str] = []

    def __call__(self, config: RunConfig, instrument: Any) -> SimulatorBackend:
        adapter = config.backend_options["adapter"]
        self.adapters.append(adapter)
        # One model per checkpoint (the run's identity includes it), as adapters give.
        step = int(Path(adapter).name.split("-")[1])
        return SimulatorBackend("base", instrument=instrument, seed=step)


def _config(tmp_path: Path) -> RunConfig:
    return RunConfig.from_mapping(
        {
            "backend": "simulator",
            "model": "base",
            "max_personas": 3,
            "repetitions": 2,
            "store": tmp_path / "runs.db",
            "self_run": False,
            "progress": False,
        },
        source="test",
    )


def test_new_checkpoints_are_measured_as_they_appear(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    _checkpoint(folder, 100)
    builder = _Builder()
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the trainer saves two more while we wait
        waits.append(seconds)
        if len(waits) == 1:
            _checkpoint(folder, 300)
            _checkpoint(folder / "checkpoints", 200)

    measured = watch_checkpoints(
        folder,
        _config(tmp_path),
        prefix="ft",
        interval=5,
        max_concurrency=2,
        max_polls=3,
        backend_builder=builder,
        sleep=sleep,
    )
    assert [m.step for m in measured] == [100, 200, 300]
    assert [m.name for m in measured] == ["ft/step0100", "ft/step0200", "ft/step0300"]
    assert waits == [5, 5]
    assert sorted(Path(a).name for a in builder.adapters) == [
        "checkpoint-100",
        "checkpoint-200",
        "checkpoint-300",
    ]
    for m in measured:
        assert m.outcome is not None and m.outcome.metrics is not None
        assert m.outcome.collection["persona"].collected == 3 * 30 * 2

    # Watching again resumes: nothing stored is asked again.
    again = watch_checkpoints(
        folder, _config(tmp_path), prefix="ft", max_polls=1, backend_builder=_Builder()
    )
    assert [m.outcome.collection["persona"].collected for m in again if m.outcome] == [0, 0, 0]


def test_unready_checkpoints_and_bad_settings(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-50").mkdir()  # config written, weights not yet
    (tmp_path / "checkpoint-50" / "adapter_config.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert find_checkpoints(tmp_path) == {}
    with pytest.raises(InputFileError, match="not a folder"):
        find_checkpoints(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_concurrency"):
        watch_checkpoints(tmp_path, _config(tmp_path), prefix="p", max_concurrency=0)
