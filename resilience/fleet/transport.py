"""How a report reaches the dashboard: one HTTP POST, answered with commands.

Commands also arrive sooner through a long-poll (:meth:`HttpTransport.receive`, run
by the reporter's listener thread): ``GET /api/fleet/v1/commands`` held by the
dashboard until a command is queued for this instance (or ``wait`` seconds pass).

:class:`HttpTransport` uses only the standard library (``urllib``), with a short
timeout so a slow dashboard costs the reporter thread a few seconds at worst, never
the worker's calls. It runs on the reporter thread only; it holds no state between
sends (a connection per report: at 1 Hz the handshake is noise, and a dashboard
restart never leaves a dead pooled connection behind).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from resilience.fleet.protocol import COMMANDS_PATH, REPORT_PATH

__all__ = ["HttpTransport", "PushTransport", "Transport", "TransportError"]

MAX_ANSWER_BYTES = 1 << 20


class TransportError(Exception):
    """A report did not reach the dashboard, or its answer was not usable.

    ``status`` is the HTTP status the dashboard answered with, if it answered.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def refused(self) -> bool:
        """The dashboard refused this message for good (a 4xx other than 408/429):
        sending it again would fail again."""
        return (
            self.status is not None
            and 400 <= self.status < 500
            and self.status
            not in (
                408,
                429,
            )
        )


class Transport(Protocol):
    """Sends one encoded report; returns the parsed answer or raises TransportError."""

    def send(self, body: bytes) -> dict[str, Any]: ...


class PushTransport(Transport, Protocol):
    """A transport that also receives answers pushed by the dashboard (Redis).

    ``receive`` waits up to ``wait`` seconds and returns the answers that arrived
    (possibly none), or raises TransportError; the reporter calls it in a loop on a
    thread of its own.
    """

    def receive(self, instance_id: str, wait: float) -> list[dict[str, Any]]: ...


def report_url(url: str) -> str:
    """The report endpoint for a dashboard base URL (or the endpoint itself)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"dashboard url must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith(REPORT_PATH) else url + REPORT_PATH


class HttpTransport:
    """POST reports to ``<dashboard url>/api/fleet/v1/report`` with a bearer token.

    Args:
        url: the dashboard's base URL (``https://dash.example.com``) or the endpoint.
        token: an API token whose user has ``fleet.report_fleet``; None sends none.
        timeout: seconds for connecting and for reading the answer.
        user_agent: sent as ``User-Agent``.

    Raises:
        ValueError: ``url`` is not an http(s) URL, or ``timeout`` is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 2.0,
        user_agent: str = "resilience-fleet",
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.url = report_url(url)
        self.timeout = timeout
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

        self.commands_url = self.url.removesuffix(REPORT_PATH) + COMMANDS_PATH
        self.push_unsupported = False
        """True once the dashboard answered the long-poll 404/405/501 (an older one)."""

    def __repr__(self) -> str:
        return f"<HttpTransport {self.url}>"

    def receive(self, instance_id: str, wait: float) -> list[dict[str, Any]]:
        """Long-poll ``GET .../commands``: the answers for ``instance_id`` (maybe none).

        The dashboard holds the request up to ``wait`` seconds and answers as soon as
        a command for this instance is queued.

        Raises:
            TransportError: as :meth:`send`; ``push_unsupported`` is set when the
                dashboard has no long-poll endpoint.
        """
        query = urllib.parse.urlencode({"instance": instance_id, "wait": f"{wait:g}"})
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        request = urllib.request.Request(f"{self.commands_url}?{query}", headers=headers)
        try:
            answer = self._exchange(request, self.timeout + wait)
        except TransportError as exc:
            if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code in (
                404,
                405,
                501,
            ):
                self.push_unsupported = True
            raise
        commands = answer.get("commands")
        return [answer] if isinstance(commands, list) and commands else []

    def send(self, body: bytes) -> dict[str, Any]:
        """POST ``body``; returns the JSON answer.

        Raises:
            TransportError: no connection, a timeout, a non-2xx status (the message
                names it and the start of the answer) or an answer that is not a
                JSON object.
        """
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        return self._exchange(request, self.timeout)

    def _exchange(self, request: urllib.request.Request, timeout: float) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            raise TransportError(
                f"dashboard answered {exc.code}: {detail}", status=exc.code
            ) from exc
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, reset
            raise TransportError(f"dashboard unreachable: {exc}") from exc
        if len(raw) > MAX_ANSWER_BYTES:
            raise TransportError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise TransportError(f"answer is not JSON: {raw[:100]!r}") from exc
        if not isinstance(answer, dict):
            raise TransportError(f"answer is not a JSON object: {raw[:100]!r}")
        return answer
