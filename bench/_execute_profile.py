"""The execute bench in process, for a profiler: ``python -m bench._execute_profile``.

Builds the execute bench's site (:mod:`bench._execute_settings`) on a throw-away SQLite
database, starts the runtime (span writer, service-map rollup: their threads' CPU counts
here too) and drives ``POST`` executes through Django's test client, without daphne:

- ``python -m bench._execute_profile hard 1500``: that many hardened executes (under
  ``py-spy record --gil -- ...`` to see where the hardening's CPU goes);
- ``... plain 1500``: the unhardened twin;
- ``... ab 150``: rounds of both, interleaved; prints the process CPU per request.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from io import StringIO
from typing import Any

CALLERS = 16


def _setup(directory: str) -> Any:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{directory}/bench.sqlite3",
        SECRET_KEY="bench-execute-profile-only-secret-key-0123456789abcdef",
        MEDIA_ROOT=f"{directory}/media",
        RESILIENCE_DEMO="0",
        API_RATE_LIMIT="",
        ALERTS_ENABLED="false",
        DJANGO_SETTINGS_MODULE="bench._execute_settings",
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from dashboard import runtime

    call_command("migrate", "--noinput", verbosity=0)
    get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pw-123456")
    out = StringIO()
    call_command("create_api_token", "bench", "--name", "bench", stdout=out)
    token = out.getvalue().strip().split()[-1]
    runtime.start()
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")


def _run(client: Any, kind: str, count: int) -> float:
    """Process CPU milliseconds per request (every thread's) over ``count`` executes."""
    path = "/api/workflows/bench-{}/execute" if kind == "hard" else "/bench/plain/bench-{}/execute"
    started = time.process_time()
    for n in range(count):
        response = client.post(path.format(n % CALLERS))
        if response.status_code != 200:
            raise RuntimeError(f"{kind}: {response.status_code} {response.content[:200]!r}")
    return (time.process_time() - started) / count * 1000


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "ab"
    count = int(argv[1]) if len(argv) > 1 else 150
    with tempfile.TemporaryDirectory(prefix="bench-execute-profile-") as directory:
        client = _setup(directory)
        from dashboard import runtime

        try:
            _run(client, "hard", 20)
            _run(client, "plain", 20)
            if kind != "ab":
                print(f"{kind}: {_run(client, kind, count):.2f} ms CPU/request")
                return 0
            cpu: dict[str, list[float]] = {"plain": [], "hard": []}
            for _round in range(5):
                for name, values in cpu.items():
                    values.append(_run(client, name, count))
            medians = {name: sorted(values)[2] for name, values in cpu.items()}
            for name, values in cpu.items():
                print(f"{name}: median {medians[name]:.2f} ms CPU/request, rounds {values}")
            print(f"ratio {medians['hard'] / medians['plain']:.2f}")
        finally:
            runtime.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
