"""The Simulation page's pattern choices, carried to every process that runs the fake services.

In ``make run`` the simulated workload runs in the ``run_agents`` worker processes, each
with its own :class:`~.simulated.ServiceWorld`, so "break payments" must reach them:

- the page (:func:`.actions.change_service_pattern`, audited) writes the choice to a
  :class:`~.models.ServicePattern` row whose ``version`` grows with every change;
- each worker runs a :class:`PatternFollower` that reads the rows about once a second,
  applies a version it has not applied yet to its world, and acknowledges with a
  :class:`~.models.PatternApplied` row, which the page lists ("applied by").

Why the database and not a fleet command: the workers are Django management commands
that already share the dashboard's database; a stored choice is the *state* of the
simulation, so a worker started later (or restarted) adopts it, and a server restart
keeps it, which a one-shot command to the instances live at the click would not (fleet
commands are deliberately not retroactive). The fleet protocol stays about breakers and
limiters. A choice with a limited duration (``down-30s``) is applied with its age, so
a late worker does not start the 30 s again.

Concurrency: a follower is used by one thread (the worker's ``simulation-patterns``
thread, or a test calling :meth:`PatternFollower.poll`); its bookkeeping is touched only
there. ``fetch`` and ``acknowledge`` do database I/O on that thread. Applying a pattern
takes the world's own lock (:meth:`ServiceWorld.set_pattern`), so the workflow threads
calling the services see the old or the new pattern, never half of one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from resilience._validate import positive

from . import simulated
from .models import PatternApplied, ServicePattern

logger = logging.getLogger(__name__)

DEFAULT = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    """A service's chosen pattern: the preset (or ``default``), its version and age (s)."""

    service: str
    choice: str
    version: int
    age: float = 0.0


def apply_choice(
    world: simulated.ServiceWorld, service: str, choice: str, *, age: float = 0.0
) -> simulated.Pattern:
    """Give ``service`` the preset ``choice`` (``default``: its configured pattern), keeping
    the service's own latency; returns the previous pattern.

    Raises:
        ValueError: unknown service or preset.
    """
    base = world.default(service)
    pattern = base if choice == DEFAULT else simulated.preset(choice, base)
    return world.set_pattern(service, pattern, age=age)


# ---- the database side ------------------------------------------------------------------


def choose(*, service: str, choice: str, actor: str, now: datetime | None = None) -> int:
    """Store ``choice`` for ``service``; returns its new version."""
    now = now or timezone.now()
    fields = {"choice": choice, "changed_at": now, "changed_by": actor}
    with transaction.atomic():
        # get_or_create survives two servers storing a service's first choice at once;
        # the increment in SQL keeps concurrent changes from sharing a version.
        ServicePattern.objects.get_or_create(service=service, defaults={**fields, "version": 0})
        ServicePattern.objects.filter(service=service).update(**fields, version=F("version") + 1)
        return int(ServicePattern.objects.values_list("version", flat=True).get(service=service))


def desired(*, now: datetime | None = None) -> list[Desired]:
    """Every stored choice, with its age at ``now``."""
    now = now or timezone.now()
    return [
        Desired(
            service=row.service,
            choice=row.choice,
            version=row.version,
            age=max((now - row.changed_at).total_seconds(), 0.0),
        )
        for row in ServicePattern.objects.all()
    ]


def acknowledge(
    *, instance: str, label: str, applied: Sequence[Desired], now: datetime | None = None
) -> None:
    """Record that the worker ``instance`` applies these versions."""
    now = now or timezone.now()
    for row in applied:
        PatternApplied.objects.update_or_create(
            instance=instance,
            service=row.service,
            defaults={"label": label, "version": row.version, "applied_at": now},
        )


def appliers(*, live: set[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """Per service, the labels of the workers that ``applied`` its current choice and of
    those still ``pending`` (an older version). ``live``: only these instance ids."""
    current = dict(ServicePattern.objects.values_list("service", "version"))
    result: dict[str, dict[str, list[str]]] = {}
    for ack in PatternApplied.objects.all():
        if ack.service not in current or (live is not None and ack.instance not in live):
            continue
        entry = result.setdefault(ack.service, {"applied": [], "pending": []})
        entry["applied" if ack.version >= current[ack.service] else "pending"].append(ack.label)
    return result


# ---- the worker side --------------------------------------------------------------------


class PatternFollower:
    """Applies the stored choices to ``world``, each version once.

    Args:
        world: the worker's fake services.
        fetch: the choices now (default :func:`desired`, on the database).
        acknowledge: told what was applied (a failure is retried at the next poll).
        clock: monotonic seconds.
        interval: seconds between two reads.
    """

    def __init__(
        self,
        world: simulated.ServiceWorld,
        *,
        fetch: Callable[[], Sequence[Desired]],
        acknowledge: Callable[[Sequence[Desired]], object],
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self.world = world
        self.fetch = fetch
        self.acknowledge = acknowledge
        self.clock = clock
        self.interval = positive("interval", interval)
        self.applied: dict[str, int] = {}
        self.errors = 0
        self._unacknowledged: list[Desired] = []
        self._next: float | None = None

    def poll(self, now: float | None = None) -> list[Desired]:
        """Read and apply the choices if ``interval`` has passed; returns what changed."""
        now = self.clock() if now is None else now
        if self._next is not None and now < self._next:
            return []
        self._next = now + self.interval
        try:
            rows = list(self.fetch())
        except Exception:
            self.errors += 1
            logger.exception("reading the simulation's patterns failed")
            return []
        changed = []
        for row in rows:
            if self.applied.get(row.service) == row.version:
                continue
            self.applied[row.service] = row.version
            try:
                apply_choice(self.world, row.service, row.choice, age=row.age)
            except ValueError as exc:  # a service or preset this worker does not have
                logger.warning("pattern %s for %s not applied: %s", row.choice, row.service, exc)
                continue
            changed.append(row)
        self._unacknowledged.extend(changed)
        if self._unacknowledged:
            try:
                self.acknowledge(list(self._unacknowledged))
                self._unacknowledged.clear()
            except Exception:
                self.errors += 1
                logger.exception("acknowledging the simulation's patterns failed")
        return changed

    def next_poll_in(self, now: float | None = None) -> float:
        """Seconds until the next read is due (0 if it is due now)."""
        if self._next is None:
            return 0.0
        return max(self._next - (self.clock() if now is None else now), 0.0)


def database_follower(
    world: simulated.ServiceWorld, *, instance: str, label: str, interval: float = 1.0
) -> PatternFollower:
    """A follower reading :class:`ServicePattern` and acknowledging as ``instance``."""

    def fetch() -> list[Desired]:
        try:
            return desired()
        finally:
            close_old_connections()

    def ack(rows: Sequence[Desired]) -> None:
        try:
            acknowledge(instance=instance, label=label, applied=rows)
        finally:
            close_old_connections()

    return PatternFollower(world, fetch=fetch, acknowledge=ack, interval=interval)


def follow(follower: PatternFollower, stop: threading.Event) -> threading.Thread:
    """Poll in a daemon thread until ``stop`` is set."""

    def loop() -> None:
        while True:
            follower.poll()
            if stop.wait(max(follower.next_poll_in(), 0.01)):
                return

    thread = threading.Thread(target=loop, name="simulation-patterns", daemon=True)
    thread.start()
    return thread
