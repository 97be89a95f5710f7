from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import resilience.checkpoint as checkpoint
from resilience.checkpoint import (
    StateCheckpointManager,
    checkpoint_manager,
    get_default_checkpoint_manager,
    set_default_checkpoint_manager,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    previous = set_default_checkpoint_manager(None)
    yield
    set_default_checkpoint_manager(previous)


def test_importing_the_default_manager_creates_nothing_on_disk(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESILIENCE_CHECKPOINT_DIR": "ck-env"}
    code = (
        "import resilience.checkpoint as c\n"
        "from resilience.checkpoint import checkpoint_manager\n"
        "print(repr(checkpoint_manager))\n"
    )
    for extra in ({}, {"RESILIENCE_CHECKPOINT_DIR": ""}):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert "not created yet" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_default_manager_uses_the_env_directory_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENCE_CHECKPOINT_DIR", str(tmp_path / "from-env"))
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    assert (tmp_path / "from-env" / f"{checkpoint_id}.ckpt").exists()
    assert checkpoint_manager.load_checkpoint(checkpoint_id) == {"x": 1}
    assert get_default_checkpoint_manager() is get_default_checkpoint_manager()


def test_default_manager_falls_back_to_dot_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESILIENCE_CHECKPOINT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    checkpoint_id = checkpoint_manager.save_checkpoint({}, "a", "w")
    assert (tmp_path / "checkpoints" / f"{checkpoint_id}.ckpt").exists()


def test_set_default_replaces_the_manager_behind_the_proxy(tmp_path: Path) -> None:
    custom = StateCheckpointManager(tmp_path / "custom", compression="gzip")
    assert set_default_checkpoint_manager(custom) is None
    assert get_default_checkpoint_manager() is custom
    assert checkpoint_manager.codec == "gzip"
    checkpoint_id = checkpoint_manager.save_checkpoint({}, "a", "w")
    assert custom.get_latest_checkpoint() == checkpoint_id
    assert "custom" in repr(checkpoint_manager)
    assert set_default_checkpoint_manager(None) is custom


def test_set_default_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="StateCheckpointManager"):
        set_default_checkpoint_manager(object())  # type: ignore[arg-type]


def test_package_all_is_sorted_and_importable() -> None:
    assert checkpoint.__all__ == sorted(checkpoint.__all__)
    for name in checkpoint.__all__:
        assert hasattr(checkpoint, name)
