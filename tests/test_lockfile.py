"""The lock: fresh against pyproject.toml, exact in the environment, hashed, and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import lockfile

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]

[project]
name = "x"
requires-python = ">=3.11"
dependencies = ["orjson>=3.10,<4", "zstandard>=0.22"]

[project.optional-dependencies]
dev = ["pytest>=8"]

[tool.ruff]
line-length = 100
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    lock = tmp_path / "requirements.lock"
    lock.write_text("orjson==3.10.0 \\\n    --hash=sha256:00\n")
    lockfile.stamp(lock, pyproject)
    return pyproject, lock


def test_a_stamped_lock_is_fresh(project: tuple[Path, Path]) -> None:
    pyproject, lock = project
    assert lockfile.check(lock, pyproject) is None


def test_stamping_twice_keeps_one_digest_line(project: tuple[Path, Path]) -> None:
    pyproject, lock = project
    lockfile.stamp(lock, pyproject)
    assert lock.read_text().count(lockfile.DIGEST_PREFIX) == 1


@pytest.mark.parametrize(
    "edit",
    [
        ('"orjson>=3.10,<4"', '"orjson>=3.11,<4"'),  # a range
        ('dev = ["pytest>=8"]', 'dev = ["pytest>=8", "ruff"]'),  # an extra
        ('requires = ["setuptools>=77"]', 'requires = ["setuptools>=80"]'),  # build system
        ('requires-python = ">=3.11"', 'requires-python = ">=3.12"'),
    ],
)
def test_a_dependency_change_makes_the_lock_stale(
    project: tuple[Path, Path], edit: tuple[str, str]
) -> None:
    pyproject, lock = project
    pyproject.write_text(PYPROJECT.replace(*edit))
    problem = lockfile.check(lock, pyproject)
    assert problem is not None and "make lock" in problem


def test_tool_settings_and_dependency_order_do_not_make_it_stale(
    project: tuple[Path, Path],
) -> None:
    pyproject, lock = project
    reordered = PYPROJECT.replace(
        '["orjson>=3.10,<4", "zstandard>=0.22"]', '["zstandard>=0.22", "orjson>=3.10,<4"]'
    ).replace("line-length = 100", "line-length = 120")
    pyproject.write_text(reordered)
    assert lockfile.check(lock, pyproject) is None


def test_a_missing_or_unstamped_lock_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    missing = lockfile.check(tmp_path / "none.lock", pyproject)
    assert missing is not None and "is missing" in missing
    unstamped = tmp_path / "requirements.lock"
    unstamped.write_text("orjson==3.10.0\n")
    problem = lockfile.check(unstamped, pyproject)
    assert problem is not None and "no pyproject digest" in problem


def test_pins_are_read_by_canonical_name() -> None:
    text = (
        "Django_Stubs==5.2.1 \\\n    --hash=sha256:aa\n# zope.interface==1\nzope.interface==7.0\n"
    )
    assert lockfile.pins(text) == {"django-stubs": "5.2.1", "zope-interface": "7.0"}


def test_the_committed_lock_is_fresh_and_fully_hashed() -> None:
    assert lockfile.check() is None
    text = lockfile.LOCK.read_text()
    entries = [block for block in text.split("\n") if "==" in block and not block.startswith("#")]
    assert entries, "the lock pins nothing"
    for entry in entries:
        name = entry.split("==")[0]
        after = text.split(entry, 1)[1]
        assert after.lstrip(" \\\n").startswith("--hash=sha256:"), f"{name} has no hash"


def test_this_environment_is_exactly_the_lock() -> None:
    assert lockfile.installed_mismatches() == []


def test_the_check_command_exits_nonzero_with_a_message_when_stale(
    project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pyproject, lock = project
    monkeypatch.setattr(lockfile, "LOCK", lock)
    monkeypatch.setattr(lockfile, "PYPROJECT", pyproject)
    assert lockfile.main(["check"]) == 0
    pyproject.write_text(PYPROJECT.replace("zstandard>=0.22", "zstandard>=0.23"))
    assert lockfile.main(["check"]) == 1
    assert "run `make lock`" in capsys.readouterr().err


def test_installed_reports_a_version_that_differs_from_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("orjson==0.0.1 \\\n    --hash=sha256:00\nnot-a-real-package-x==1.0\n")
    problems = lockfile.installed_mismatches(lock)
    assert any(p.startswith("orjson is ") and "the lock says 0.0.1" in p for p in problems)
    assert "not-a-real-package-x==1.0 is locked but not installed" in problems
    assert any("is installed but not in the lock" in p for p in problems)
