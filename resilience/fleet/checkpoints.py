"""A plain-Python worker's checkpoints in the dashboard: metadata up the fleet connection.

The worker keeps its blobs where the dashboard reads them (a shared filesystem path,
the dashboard's ``MEDIA_ROOT/checkpoints``), and sends each saved checkpoint's
metadata (a ``checkpoints`` message of the fleet protocol, see
``protocol.schema.json#/$defs/CheckpointsMessage``) to
``POST <dashboard>/api/fleet/v1/checkpoints`` — or, when the worker reports through
Redis, adds it to the reports stream under the field ``checkpoints``. The dashboard
records a row per checkpoint (bound to the reporting service: a workflow of another
service is refused, and such a batch is dropped and counted in ``refused``), and its
admin lists, verifies, downloads and deletes them::

    manager = StateCheckpointManager(
        "/shared/media/checkpoints", signing_key=os.environ["CHECKPOINT_SIGNING_KEY"]
    )
    reporter = resilience.fleet.connect()  # or a FleetReporter of your own
    resilience.fleet.checkpoints.forward(manager, reporter=reporter)

Concurrency model: the checkpoint manager publishes ``CheckpointSaved`` on the saving
thread; :meth:`CheckpointForwarder._on_event` only appends the id to a bounded deque
(dropped and counted when full) and sets an Event. A daemon thread reads each record
from the manager's index, posts them in batches, and on failure keeps them (bounded)
and retries with exponential backoff. Nothing here blocks or raises into a save.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any, TypedDict

from resilience.checkpoint import StateCheckpointManager
from resilience.events import CheckpointSaved, Event, EventBus, bus
from resilience.fleet.protocol import PROTOCOL_VERSION, InstanceInfo
from resilience.fleet.transport import HttpTransport, Transport, TransportError

__all__ = ["CHECKPOINTS_PATH", "CheckpointForwarder", "CheckpointItem", "forward"]

logger = logging.getLogger(__name__)

CHECKPOINTS_PATH = "/api/fleet/v1/checkpoints"
MAX_BATCH = 100
BLOB_SUFFIX = ".ckpt"


class CheckpointItem(TypedDict):
    checkpoint_id: str
    agent_id: str
    workflow_id: str
    created_at: float
    raw_size: int
    stored_size: int
    sha256: str
    codec: str
    metadata: dict[str, Any]
    blob: str


class CheckpointForwarder:
    """Sends the metadata of every checkpoint ``manager`` saves to the dashboard.

    Args:
        manager: the worker's checkpoint manager (its blobs must be readable by the
            dashboard: a directory shared with the dashboard's checkpoint storage).
        transport: posts one encoded message (``send(body) -> answer``).
        instance: who this process is (the fleet reporter's ``instance``).
        max_pending: ids kept while the dashboard is unreachable; more are dropped.
        max_backoff: the longest pause between retries, in seconds.
        event_bus: where ``CheckpointSaved`` events come from.

    Raises:
        ValueError: ``max_pending`` < 1 or ``max_backoff`` <= 0.
    """

    def __init__(
        self,
        manager: StateCheckpointManager,
        *,
        transport: Transport,
        instance: InstanceInfo,
        max_pending: int = 10_000,
        max_backoff: float = 10.0,
        event_bus: EventBus = bus,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        if not max_backoff > 0:
            raise ValueError(f"max_backoff must be > 0, got {max_backoff!r}")
        self.manager = manager
        self.transport = transport
        self.instance = instance
        self.max_backoff = max_backoff
        self._pending: deque[str] = deque()
        self._max_pending = max_pending
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._bus = event_bus
        self.sent = self.failed = self.dropped = self.refused = 0
        event_bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if type(event) is not CheckpointSaved:
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(event.name)
        self._wake.set()

    def items(self, ids: list[str]) -> list[CheckpointItem]:
        """The records of ``ids`` from the manager's index (ids no longer there skipped)."""
        found: list[CheckpointItem] = []
        for checkpoint_id in ids:
            try:
                info = self.manager.get_checkpoint_info(checkpoint_id)
            except Exception:  # deleted meanwhile, or the index is unreadable
                logger.warning("checkpoint %s: no record to report", checkpoint_id)
                continue
            found.append(
                {
                    "checkpoint_id": checkpoint_id,
                    "agent_id": str(info["agent_id"]),
                    "workflow_id": str(info["workflow_id"]),
                    "created_at": float(info["created_at"]),
                    "raw_size": int(info["raw_size"]),
                    "stored_size": int(info["stored_size"]),
                    "sha256": str(info["sha256"]),
                    "codec": str(info["codec"]),
                    "metadata": dict(info.get("metadata") or {}),
                    "blob": checkpoint_id + BLOB_SUFFIX,
                }
            )
        return found

    def send_once(self) -> bool:
        """Post up to ``MAX_BATCH`` pending checkpoints; False (kept) when that failed."""
        batch = [self._pending[i] for i in range(min(MAX_BATCH, len(self._pending)))]
        if not batch:
            return True
        message = {
            "protocol": PROTOCOL_VERSION,
            "type": "checkpoints",
            "instance": self.instance,
            "checkpoints": self.items(batch),
        }
        try:
            self.transport.send(json.dumps(message, allow_nan=False).encode())
        except TransportError as exc:
            if not exc.refused:
                self.failed += 1
                logger.debug("checkpoint metadata not delivered: %s", exc)
                return False
            # Refused for good (403: a workflow of another service; 400): drop, count.
            self.refused += len(batch)
            logger.warning("checkpoint metadata refused by the dashboard: %s", exc)
            for _ in batch:
                self._pending.popleft()
            return True
        for _ in batch:
            self._pending.popleft()
        self.sent += len(batch)
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> CheckpointForwarder:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name="resilience-fleet-checkpoints", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (one try), then stop and unsubscribe."""
        self._bus.unsubscribe(self._on_event)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            self._wake.wait(backoff if backoff else None)
            self._wake.clear()
            while self._pending:
                if not self.send_once():
                    backoff = min(max(backoff * 2, 0.5), self.max_backoff)
                    break
                backoff = 0.0
            if self._stopping.is_set():
                return


def forward(
    manager: StateCheckpointManager,
    *,
    url: str | None = None,
    token: str | None = None,
    redis_url: str | None = None,
    instance: InstanceInfo | None = None,
    reporter: Any = None,
    timeout: float = 2.0,
) -> CheckpointForwarder:
    """Start forwarding ``manager``'s checkpoint metadata to the dashboard.

    The metadata takes the reporter's way: through Redis when ``redis_url`` is given or
    ``reporter`` reports through Redis (an entry with the field ``checkpoints`` on the
    reports stream), else over HTTP.

    Args:
        manager: the worker's checkpoint manager.
        url / token: the dashboard and an API token with ``fleet.report_fleet``
            (default: from the fleet environment variables).
        redis_url: the dashboard's Redis (default: ``reporter``'s, if it uses Redis).
        instance: this process (default: ``reporter.instance``, else a new one).
        reporter: a running :class:`~resilience.fleet.FleetReporter` to share the
            instance and the transport with.
        timeout: seconds for one HTTP exchange or Redis command.

    Raises:
        ValueError: no dashboard URL given or found, or it is not http(s) (or redis).
    """
    import os

    from resilience.fleet import ENV_TOKEN, ENV_URL, instance_info

    if reporter is not None and instance is None:
        instance = reporter.instance
    if redis_url is None and url is None and reporter is not None:
        redis_url = getattr(reporter.transport, "url", None) if _is_redis(reporter) else None
    if redis_url is not None:
        from resilience.fleet.protocol import REDIS_CHECKPOINTS_FIELD
        from resilience.fleet.redis_transport import RedisTransport

        return CheckpointForwarder(
            manager,
            transport=RedisTransport(redis_url, timeout=timeout, field=REDIS_CHECKPOINTS_FIELD),
            instance=instance or instance_info(),
        ).start()
    url = url or os.environ.get(ENV_URL, "").strip()
    if not url:
        raise ValueError("a dashboard url is needed (argument or RESILIENCE_DASHBOARD_URL)")
    token = token if token is not None else (os.environ.get(ENV_TOKEN, "").strip() or None)
    transport = HttpTransport(url, token=token, timeout=timeout)
    transport.url = transport.url[: -len("/api/fleet/v1/report")] + CHECKPOINTS_PATH
    return CheckpointForwarder(
        manager, transport=transport, instance=instance or instance_info()
    ).start()


def _is_redis(reporter: Any) -> bool:
    try:
        from resilience.fleet.redis_transport import RedisTransport
    except ImportError:  # redis-py not installed: the reporter cannot be using it
        return False
    return isinstance(getattr(reporter, "transport", None), RedisTransport)
