"""The application's lock file (`deploy/requirements.lock`) and its freshness check.

`make lock` runs pip-compile (pip-tools) over `pyproject.toml` with every extra, then
`python -m tests.lockfile stamp`, which appends a digest of the parts of `pyproject.toml`
that decide what gets installed (Python version, dependencies, extras, build system).
`make test` runs `python -m tests.lockfile check` first: when those parts changed and the
lock was not regenerated, it stops with a message that says so. Editing ruff, mypy or
pytest settings in `pyproject.toml` does not make the lock stale.

`python -m tests.lockfile installed` compares the running environment with the lock:
every locked package at its locked version, and nothing else but the project itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "deploy" / "requirements.lock"
PROJECT = "resilience-dashboard"
DIGEST_PREFIX = "# pyproject.toml digest: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def canonical(name: str) -> str:
    """PEP 503 normalised name (`Django_Stubs` and `django-stubs` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_digest(text: str) -> str:
    """SHA-256 over what decides the resolution, independent of formatting and order."""
    data = tomllib.loads(text)
    project = data.get("project", {})
    relevant = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {
            extra: sorted(reqs) for extra, reqs in project.get("optional-dependencies", {}).items()
        },
        "build-system": sorted(data.get("build-system", {}).get("requires", [])),
    }
    encoded = json.dumps(relevant, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def recorded_digest(lock_text: str) -> str | None:
    for line in lock_text.splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX) :].split()[0]
    return None


def pins(lock_text: str) -> dict[str, str]:
    """Every `name==version` line of the lock, by canonical name."""
    return {canonical(name): version for name, version in _PIN.findall(lock_text)}


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stamp(lock: Path | None = None, pyproject: Path | None = None) -> None:
    lock, pyproject = lock or LOCK, pyproject or PYPROJECT
    text = lock.read_text()
    lines = [line for line in text.splitlines() if not line.startswith(DIGEST_PREFIX)]
    lines.append(
        f"{DIGEST_PREFIX}{pyproject_digest(pyproject.read_text())} "
        "(written by `make lock`, checked by `make test`)"
    )
    lock.write_text("\n".join(lines) + "\n")


def check(lock: Path | None = None, pyproject: Path | None = None) -> str | None:
    """None when the lock matches `pyproject.toml`, else what is wrong and what to run."""
    lock, pyproject = lock or LOCK, pyproject or PYPROJECT
    if not lock.exists():
        return f"{_shown(lock)} is missing: run `make lock` and commit it."
    recorded = recorded_digest(lock.read_text())
    if recorded is None:
        return f"{_shown(lock)} has no pyproject digest: run `make lock`."
    if recorded != pyproject_digest(pyproject.read_text()):
        return (
            f"{_shown(pyproject)}'s dependencies changed since {_shown(lock)} was made: "
            "run `make lock`, then `make test`, and commit both files."
        )
    return None


def installed_mismatches(lock: Path | None = None) -> list[str]:
    """How the running environment differs from the lock (empty when it is exact)."""
    locked = pins((lock or LOCK).read_text())
    present: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            present[canonical(name)] = dist.version
    problems = []
    for name, version in sorted(locked.items()):
        have = present.get(name)
        if have is None:
            problems.append(f"{name}=={version} is locked but not installed")
        elif have != version:
            problems.append(f"{name} is {have}, the lock says {version}")
    for name, version in sorted(present.items()):
        if name not in locked and name != PROJECT:
            problems.append(f"{name}=={version} is installed but not in the lock")
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "stamp":
        stamp()
        return 0
    if command == "check":
        problem = check()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        return 0
    if command == "installed":
        problems = installed_mismatches()
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print("usage: python -m tests.lockfile [check|stamp|installed]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
