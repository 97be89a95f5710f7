"""A private, loopback-only PostgreSQL cluster for the test suite.

Used by `make test` (``python -m tests.services postgres start DIR``). Nothing here
touches a system-wide server: the cluster lives in its own directory on a free port.
(Redis: tests/resilience/redis_server.py.)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
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


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "postgres" or argv[1] not in ("start", "stop"):
        print("usage: python -m tests.services postgres start|stop DIR", file=sys.stderr)
        return 2
    if argv[1] == "start":
        print(postgres_start(Path(argv[2])))
    else:
        postgres_stop(Path(argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
