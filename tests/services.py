"""Private, loopback-only PostgreSQL and Redis servers for tests and benchmarks.

Used by `make test` (``python -m tests.services postgres start DIR``) and by fixtures.
Nothing here touches a system-wide server: each instance lives in its own directory
on a free port and is stopped by pid.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


class ServiceMissing(RuntimeError):
    """The server binary is not installed (``make system-deps`` installs it as root)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise ServiceMissing(f"PostgreSQL's {name} is not installed")
    return path


def _as_db_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: drop to the `postgres` user when we are root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def postgres_start(directory: Path) -> str:
    """Create and start a cluster in ``directory``; returns its DATABASE_URL."""
    directory.mkdir(parents=True, exist_ok=True)
    data, sockets = directory / "data", directory / "sock"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (directory, sockets):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    port = free_port()
    subprocess.run(
        _as_db_user(
            [_pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    subprocess.run(
        _as_db_user(
            [
                _pg_bin("pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(directory / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    (directory / "port").write_text(str(port))
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def postgres_stop(directory: Path) -> None:
    data = directory / "data"
    if data.exists():
        subprocess.run(
            _as_db_user([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
    shutil.rmtree(directory, ignore_errors=True)


def redis_start(directory: Path) -> str:
    """Start a redis-server in ``directory``; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceMissing("redis-server is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    subprocess.run(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--daemonize",
            "yes",
            "--pidfile",
            str(directory / "redis.pid"),
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not start on port {port}")


def redis_stop(directory: Path) -> None:
    pidfile = directory / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass
    shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("postgres", "redis") or argv[1] not in ("start", "stop"):
        print("usage: python -m tests.services postgres|redis start|stop DIR", file=sys.stderr)
        return 2
    kind, action, directory = argv[0], argv[1], Path(argv[2])
    if action == "start":
        print((postgres_start if kind == "postgres" else redis_start)(directory))
    else:
        (postgres_stop if kind == "postgres" else redis_stop)(directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
