"""``manage.py demo``: run the workflow load generator (optionally serving the dashboard)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard import demo, runtime


class Command(BaseCommand):
    help = (
        "Run workflows continuously against the fake services (breakers trip and recover, "
        "the limiter rejects bursts). With --serve, also serve the dashboard from this "
        "process (where the breakers live); --no-demo serves without the load."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, help="workflows started per second")
        parser.add_argument(
            "--duration", type=float, default=0.0, help="stop after this many seconds (0: never)"
        )
        parser.add_argument("--serve", action="store_true", help="also serve the dashboard")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-demo", action="store_true", help="with --serve: serve without the load"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rate = options["rate"]
        if rate is not None and rate <= 0:
            raise CommandError(f"--rate must be > 0, got {rate!r}")
        if options["duration"] < 0:
            raise CommandError(f"--duration must be >= 0, got {options['duration']!r}")
        if options["no_demo"] and not options["serve"]:
            raise CommandError("--no-demo only makes sense with --serve")
        # This process serves (--serve) or only runs the load: either way it records and
        # traces like a server; the load itself is started here, at the --rate given.
        runtime.start(runtime.Features.from_settings(serving=options["serve"], demo=False))
        if not options["no_demo"]:
            demo.start(rate)
            self.stdout.write("Load generator started.")
        if options["serve"]:
            from daphne.cli import CommandLineInterface

            host, port = options["host"], str(options["port"])
            self.stdout.write(f"Serving on http://{host}:{port}/")
            CommandLineInterface().run(["-b", host, "-p", port, "dashboard.asgi:application"])
            return
        self._report(options["duration"])

    def _report(self, duration: float) -> None:
        from dashboard.workflows import loadgen

        deadline = time.monotonic() + duration if duration else None
        generator = loadgen.current()
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(min(5.0, deadline - time.monotonic()) if deadline else 5.0)
                if generator is not None:
                    self.stdout.write(
                        ", ".join(f"{k}={v}" for k, v in generator.snapshot().items())
                    )
        except KeyboardInterrupt:
            pass
        if generator is not None:
            generator.stop()
            self.stdout.write(f"Stopped: {generator.snapshot()}")
