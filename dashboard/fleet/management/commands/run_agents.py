"""``manage.py run_agents --service NAME``: a simulated agent worker that joins the fleet.

A separate process, like a user's Celery worker: its breakers and limiter live only
here, and it reports them to the dashboard with ``resilience.fleet.connect()``. Its
dependencies have outages now and then, so its breakers open, probe and close, and
the Fleet page shows it; Reset / Force open / Disable there reach this process.

Where it reports: ``--url``/``--token``, else ``RESILIENCE_DASHBOARD_URL``/``_TOKEN``.
This command stands for a user's worker, so it follows the worker's contract, the
variables :func:`resilience.fleet.connect` documents and reads itself, rather than the
server's settings (which describe the dashboard, not its workers); these two reads are
the only environment reads in ``dashboard/`` outside ``settings.py``.

Django is used only to mint the API token (a ``fleet-agent`` user with
``fleet.report_fleet`` and ``traces.ingest_spans``) when none is given; the loop
itself is plain ``resilience``. Each call is traced with the OpenTelemetry SDK under
``service.name`` = the agent's service and exported with the OTLP/HTTP exporter to
the dashboard's ``/v1/traces`` with the same token (``--no-traces``: off), as a
user's worker would. Ctrl-C stops it.

It also runs the simulated multi-agent workload of ``make run`` (``--no-workflows``:
off): the workflow load generator and engine (``dashboard.workflows``) against this
process's own fake services (search-api, llm, payments), behind breakers that live
here and are reported with the rest. Runs, checkpoints and acknowledgements go to the
database directly (this is a Django command); the workflow spans go to ``/v1/traces``.
The Simulation page's pattern choices reach it through the database: a follower
thread applies them about once a second (``dashboard.workflows.patterns``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

import resilience.fleet
from dashboard import runtime
from resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    RateLimitConfig,
    RateLimiter,
    RateLimitError,
    circuit_breaker_registry,
)

DEPENDENCIES = ("llm-api", "search", "vector-db")
OUTAGE_EVERY = 45.0  # seconds, on average, between outages of one dependency
OUTAGE_FOR = 12.0


class UpstreamError(Exception):
    pass


class Dependency:
    """A fake upstream that fails ~3% of calls, and every call during an outage."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.down_until = 0.0
        self.next_outage = time.monotonic() + rng.expovariate(1 / OUTAGE_EVERY)

    def call(self) -> str:
        now = time.monotonic()
        if now >= self.next_outage:
            self.down_until = now + OUTAGE_FOR
            self.next_outage = self.down_until + self.rng.expovariate(1 / OUTAGE_EVERY)
        if now < self.down_until or self.rng.random() < 0.03:
            raise UpstreamError(f"{self.name} unavailable")
        return "ok"


# ---- traces: the agent's spans, exported over OTLP/HTTP to the dashboard -------------


def agent_tracer(url: str, *, token: str, service: str, instance: str) -> tuple[Any, Any]:
    """(provider, tracer): an SDK provider of its own (not the global one, which the
    dashboard app may have set up in this process) exporting to ``url``/v1/traces."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter(
        endpoint=f"{url.rstrip('/')}/v1/traces",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,  # a dashboard that is down holds Ctrl-C up for this long at most
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, provider.get_tracer("resilience.run_agents")


@contextlib.contextmanager
def traced_call(tracer: Any, service: str, dependency: str, breaker: str) -> Iterator[None]:
    """A step span with a CLIENT child for the call; an exception marks both as errors."""
    if tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind

    with (
        tracer.start_as_current_span(f"{service}.step"),
        tracer.start_as_current_span(
            f"call {dependency}",
            kind=SpanKind.CLIENT,
            attributes={"peer.service": dependency, "resilience.breaker": breaker},
        ),
    ):
        yield


# ---- the fleet -------------------------------------------------------------------------


def agent_token(service: str) -> str:
    """A fresh week-long token of the ``fleet-agent`` user (created if missing)."""
    from django.contrib.auth.models import Permission, User

    from dashboard.api.tokens import create_token

    user, _ = User.objects.get_or_create(username="fleet-agent")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="fleet", codename="report_fleet"),
        Permission.objects.get(content_type__app_label="traces", codename="ingest_spans"),
    )
    _token, plaintext = create_token(
        user=user,
        name=f"run_agents {service}",
        expires_at=timezone.now() + timedelta(days=7),
    )
    return plaintext


def run(
    service: str,
    *,
    stop: threading.Event,
    rate: float,
    seed: int | None = None,
    tracer: Any = None,
) -> int:
    """Call the dependencies through breakers and a limiter until ``stop``; calls made."""
    rng = random.Random(seed)
    config = CircuitBreakerConfig(failure_threshold=5, timeout=8, half_open_max_calls=2)
    breakers = [
        (circuit_breaker_registry.get_or_create(name, config), Dependency(name, rng))
        for name in (*DEPENDENCIES, f"{service}.tools")
    ]
    limiter = RateLimiter(
        RateLimitConfig(max_requests=int(rate * 1.5) + 1, time_window=1),
        name=f"{service}.requests",
    )
    calls = 0
    while not stop.wait(rng.expovariate(rate)):
        breaker, dependency = rng.choice(breakers)
        calls += 1
        with (
            contextlib.suppress(UpstreamError, CircuitOpenError, RateLimitError),
            traced_call(tracer, service, dependency.name, breaker.name),
        ):
            limiter.acquire(timeout=0)
            breaker.call(dependency.call)
    return calls


# ---- the simulated workflows: the Simulation page's services, run in this worker --------


def start_workflows(
    *,
    rate: float | None,
    instance: resilience.fleet.InstanceInfo,
    tracer_provider: Any,
    poll: float = 1.0,
) -> Callable[[], None]:
    """Start the workflow load on this process's ServiceWorld, following the page's
    pattern choices; returns the function that stops both."""
    from dashboard import demo
    from dashboard.workflows import engine, loadgen, patterns, simulated
    from resilience import telemetry

    if tracer_provider is not None:
        # The engine's spans (workflow.execute, agent steps, CLIENT calls) go where
        # this agent's own spans go: /v1/traces, under its service name.
        telemetry.configure(tracer_provider=tracer_provider)
    label = f"{instance['service']}@{instance['host']}:{instance['pid']}"
    follower = patterns.database_follower(
        simulated.world(), instance=instance["id"], label=label, interval=poll
    )
    follower.poll()  # the page's current choices apply before the first workflow
    stop = threading.Event()
    thread = patterns.follow(follower, stop)
    generator = loadgen.start(engine.engine(), demo.config(rate))

    def halt() -> None:
        stop.set()
        if generator is not None:
            generator.stop(timeout=2)
        thread.join(2)

    return halt


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (what `make run` sends on Ctrl-C) stops the loop like --seconds does, so
    the workflows, the fleet connection and the span exporter shut down cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Command(BaseCommand):
    help = "Run a simulated agent worker that reports its breakers to the dashboard."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--service", required=True, help="the service name it reports")
        parser.add_argument(
            "--url",
            default=os.environ.get(resilience.fleet.ENV_URL, "http://127.0.0.1:8000"),
            help="the dashboard (default: RESILIENCE_DASHBOARD_URL or http://127.0.0.1:8000)",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get(resilience.fleet.ENV_TOKEN, ""),
            help="API token with fleet.report_fleet (default: one minted for fleet-agent)",
        )
        parser.add_argument(
            "--redis-url",
            default=settings.REDIS_URL,
            help="report through this Redis instead of HTTP (default: REDIS_URL)",
        )
        parser.add_argument("--rate", type=float, default=20.0, help="calls per second")
        parser.add_argument("--seconds", type=float, default=0, help="stop after (0: never)")
        parser.add_argument(
            "--no-traces",
            action="store_true",
            help="do not export spans to the dashboard's /v1/traces",
        )
        parser.add_argument(
            "--no-workflows",
            action="store_true",
            help="do not run the simulated workflow load (the Simulation page's services)",
        )
        parser.add_argument(
            "--workflow-rate",
            type=float,
            default=None,
            help="workflows started per second (default: WORKFLOW_DEMO_RATE, else 0.8)",
        )
        parser.add_argument(
            "--pattern-poll",
            type=float,
            default=1.0,
            help="seconds between two reads of the Simulation page's patterns",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        service: str = options["service"]
        if options["rate"] <= 0:
            raise CommandError(f"--rate must be > 0, got {options['rate']!r}")
        for option in ("workflow_rate", "pattern_poll"):
            value = options[option]
            if value is not None and value <= 0:
                name = option.replace("_", "-")
                raise CommandError(f"--{name} must be > 0, got {value!r}")
        # A worker: it records its breakers' transitions and traces like the server did
        # (cluster mode with REDIS_URL), but runs none of the server's threads.
        runtime.start(runtime.Features.from_settings(serving=False))
        redis_url = options["redis_url"] or None
        # Reports over Redis need no token; spans still go to /v1/traces with one.
        token = options["token"] or (
            "" if redis_url and options["no_traces"] else agent_token(service)
        )
        try:
            reporter = resilience.fleet.connect(
                None if redis_url else options["url"],
                redis_url=redis_url,
                token="" if redis_url else token,
                service=service,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        assert reporter is not None
        self.stdout.write(
            f"agent {service!r} ({reporter.instance['id'][:8]}) reporting to {reporter.transport!r}"
        )
        stop = threading.Event()
        if options["seconds"]:
            threading.Timer(options["seconds"], stop.set).start()
        provider, tracer = (None, None)
        if not options["no_traces"]:
            provider, tracer = agent_tracer(
                options["url"], token=token, service=service, instance=reporter.instance["id"]
            )
        halt_workflows = None
        try:
            if not options["no_workflows"]:
                halt_workflows = start_workflows(
                    rate=options["workflow_rate"],
                    instance=reporter.instance,
                    tracer_provider=provider,
                    poll=options["pattern_poll"],
                )
            with stop_on_sigterm(stop):
                calls = run(service, stop=stop, rate=options["rate"], tracer=tracer)
        except KeyboardInterrupt:
            calls = -1
        finally:
            if halt_workflows is not None:
                halt_workflows()
            resilience.fleet.disconnect(timeout=2)
            if provider is not None:
                provider.shutdown()  # exports what is still queued
        if calls >= 0:
            self.stdout.write(f"agent {service!r} stopped after {calls} calls")
