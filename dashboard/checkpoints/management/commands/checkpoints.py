"""``manage.py checkpoints verify|cleanup|orphans``: maintenance of stored checkpoints."""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from dashboard.checkpoints import retention, selectors, services
from dashboard.checkpoints.forms import DURATION_HELP, parse_duration
from dashboard.durations import format_duration
from resilience.checkpoint import CHECKPOINT_ID_PATTERN


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from exc


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _checkpoint_id(text: str) -> str:
    if CHECKPOINT_ID_PATTERN.fullmatch(text) is None:
        raise ArgumentTypeError(f"not a checkpoint id (ck_<14 hex>_<12 hex>): {text!r}")
    return text


def _plural(count: int) -> str:
    return f"{count} checkpoint{'s' if count != 1 else ''}"


class Command(BaseCommand):
    help = (
        "Checkpoints: verify integrity (exit 1 if any fails), clean up old ones, "
        "find or delete orphan blobs and rows."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{verify,cleanup,orphans}"
        )
        verify = actions.add_parser("verify", help="verify all checkpoints or the given ids")
        verify.add_argument("ids", nargs="*", type=_checkpoint_id, metavar="CHECKPOINT_ID")
        verify.add_argument("--failures-only", action="store_true", help="print only ids that fail")

        cleanup = actions.add_parser(
            "cleanup",
            help="remove old checkpoints, per agent/workflow group "
            "(no rule given: the CHECKPOINT_KEEP_LAST / CHECKPOINT_MAX_AGE policy)",
        )
        cleanup.add_argument(
            "--keep-last", type=_positive, metavar="N", help="keep the newest N of every group"
        )
        cleanup.add_argument(
            "--older-than",
            type=_duration,
            metavar="AGE",
            help=f"only remove checkpoints older than AGE ({DURATION_HELP})",
        )
        cleanup.add_argument("--dry-run", action="store_true", help="only report")
        cleanup.add_argument("--reason", default="", help="recorded in the audit log")

        orphans = actions.add_parser("orphans", help="blobs without rows, rows without blobs")
        orphans.add_argument(
            "--delete", action="store_true", help="delete orphan blobs and rows without blobs"
        )
        orphans.add_argument(
            "--grace",
            type=_duration,
            default=timedelta(hours=1),
            metavar="AGE",
            help="ignore blobs saved less than AGE ago: their row may be on its way (1h)",
        )
        orphans.add_argument("--reason", default="", help="recorded in the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "verify":
            self._verify(options)
        elif action == "cleanup":
            self._cleanup(options)
        elif action == "orphans":
            self._orphans(options)
        else:  # pragma: no cover - argparse lets only these through
            raise CommandError(f"unknown action {action!r}")

    def _verify(self, options: dict[str, Any]) -> None:
        counts = {"ok": 0, "corrupted": 0, "missing": 0}
        ids = options["ids"] or None
        for checkpoint_id, status in selectors.verify_many(checkpoint_ids=ids):
            counts[status] += 1
            if status == "ok":
                if not options["failures_only"]:
                    self.stdout.write(f"ok         {checkpoint_id}")
            else:
                label = "CORRUPTED" if status == "corrupted" else "MISSING"
                self.stdout.write(self.style.ERROR(f"{label:<10} {checkpoint_id}"))
        total = sum(counts.values())
        failed = counts["corrupted"] + counts["missing"]
        summary = (
            f"{total} checked: {counts['ok']} ok, {counts['corrupted']} corrupted, "
            f"{counts['missing']} missing blob"
        )
        if failed:
            raise CommandError(f"{summary}; {failed} failed verification", returncode=1)
        self.stdout.write(self.style.SUCCESS(summary))

    def _cleanup(self, options: dict[str, Any]) -> None:
        keep_last, older_than = options["keep_last"], options["older_than"]
        if keep_last is None and older_than is None:
            self._retention(options)
            return
        result = services.cleanup(
            keep_last=keep_last,
            older_than=older_than,
            dry_run=options["dry_run"],
            reason=options["reason"],
            source="command",
        )
        rules = []
        if keep_last is not None:
            rules.append(f"keep last {keep_last}")
        if older_than is not None:
            rules.append(f"older than {format_duration(older_than)}")
        verb = "Would remove" if result.dry_run else "Removed"
        self.stdout.write(
            f"{verb} {_plural(result.count)}, {filesizeformat(result.stored_bytes)} stored "
            f"({', '.join(rules)})."
        )
        if options["verbosity"] >= 2 or result.dry_run:
            for checkpoint_id in result.checkpoint_ids:
                self.stdout.write(f"  {checkpoint_id}")

    def _retention(self, options: dict[str, Any]) -> None:
        """No rule given: apply the configured policy (CHECKPOINT_KEEP_LAST / _MAX_AGE)."""
        try:
            rules = retention.policy()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not rules.active:
            raise CommandError(
                "cleanup needs --keep-last N and/or --older-than AGE "
                "(or CHECKPOINT_KEEP_LAST / CHECKPOINT_MAX_AGE set)"
            )
        if options["dry_run"]:
            ids, protected = retention.plan(rules)
            self.stdout.write(
                f"Would remove {_plural(len(ids))} (policy: {rules.describe()}); "
                f"{protected} kept for running workflows."
            )
            return
        status = retention.enforce(rules, source="command")
        self.stdout.write(
            f"Removed {_plural(status.deleted)} (policy: {rules.describe()}); "
            f"{status.protected} kept for running workflows."
        )

    def _orphans(self, options: dict[str, Any]) -> None:
        orphans = selectors.find_orphans(grace=options["grace"])
        self.stdout.write(f"Blobs without rows: {len(orphans.blobs)}")
        for checkpoint_id in orphans.blobs:
            self.stdout.write(f"  blob {checkpoint_id}")
        self.stdout.write(f"Rows without blobs: {len(orphans.rows)}")
        for checkpoint_id in orphans.rows:
            self.stdout.write(f"  row  {checkpoint_id}")
        if options["delete"]:
            blobs, rows = services.delete_orphans(
                orphans=orphans, reason=options["reason"], source="command"
            )
            self.stdout.write(
                f"Deleted {blobs} orphan blob{'s' if blobs != 1 else ''} and "
                f"{rows} row{'s' if rows != 1 else ''} without blobs."
            )
        elif orphans.blobs or orphans.rows:
            self.stdout.write("Run with --delete to remove them.")
