"""The process and platform collectors every Python exporter publishes.

``process_*`` (CPU seconds, resident memory, open fds, start time; Linux only),
``python_gc_*`` and ``python_info``: prometheus_client's own collectors, registered on
the facade's private registry (they live on prometheus_client's global one by default).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["register_process_collectors"]


def register_process_collectors(registry: CollectorRegistry) -> None:
    """Register ``process_*``, ``python_gc_*`` and ``python_info`` on ``registry``.

    Raises:
        ValueError: one of them is already registered there.
    """
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
