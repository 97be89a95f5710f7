"""``manage.py spans cleanup [--max-age 1h] [--max-rows N] [--dry-run]`` and ``spans stats``."""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from dashboard.durations import format_us, parse_timedelta
from dashboard.traces import conf, selectors, services


def _age(text: str) -> timedelta:
    try:
        value = parse_timedelta(text, default_unit="s")
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from exc
    if value <= timedelta(0):
        raise ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError as exc:
        raise ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if value < 1:
        raise ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


class Command(BaseCommand):
    help = "Stored spans: delete expired ones (cleanup) or show totals (stats)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{cleanup,stats}")
        cleanup = actions.add_parser("cleanup", help="delete spans beyond the retention limits")
        cleanup.add_argument(
            "--max-age", type=_age, help="e.g. 1h, 30m, 7d (default: TRACES_MAX_AGE)"
        )
        cleanup.add_argument(
            "--max-rows", type=_count, help="spans kept at most (default: TRACES_MAX_ROWS)"
        )
        cleanup.add_argument(
            "--chunk-size", type=_count, default=services.DELETE_CHUNK, help="rows per DELETE"
        )
        cleanup.add_argument(
            "--dry-run", action="store_true", help="only count what would be deleted"
        )
        actions.add_parser("stats", help="show how many spans and traces are stored")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "cleanup":
            self._cleanup(options)
        elif options["action"] == "stats":
            self._stats()
        else:  # pragma: no cover - argparse only lets the two through
            raise CommandError(f"unknown action {options['action']!r}")

    def _cleanup(self, options: dict[str, Any]) -> None:
        max_age = options["max_age"] or conf.max_age()
        max_rows = options["max_rows"] or conf.max_rows()
        result = services.cleanup_spans(
            now=timezone.now(),
            max_age=max_age,
            max_rows=max_rows,
            chunk_size=options["chunk_size"],
            dry_run=options["dry_run"],
        )
        verb = "Would delete" if result.dry_run else "Deleted"
        cutoff = f" (older than {result.cutoff:%Y-%m-%d %H:%M:%S} UTC)" if result.cutoff else ""
        self.stdout.write(
            f"{verb} {result.spans} spans and {result.traces} trace summaries{cutoff}; "
            f"limits: max age {format_us(max_age / timedelta(microseconds=1))}, "
            f"max rows {max_rows}."
        )

    def _stats(self) -> None:
        stats = selectors.store_stats()
        self.stdout.write(f"spans:       {stats.spans}")
        self.stdout.write(f"traces:      {stats.traces}")
        self.stdout.write(f"error spans: {stats.error_spans}")
        self.stdout.write(
            f"oldest:      {stats.oldest:%Y-%m-%d %H:%M:%S} UTC"
            if stats.oldest
            else "oldest:      —"
        )
        self.stdout.write(
            f"newest:      {stats.newest:%Y-%m-%d %H:%M:%S} UTC"
            if stats.newest
            else "newest:      —"
        )
        self.stdout.write(
            f"retention:   max age {format_us(conf.max_age() / timedelta(microseconds=1))}, "
            f"max rows {conf.max_rows()}"
        )
