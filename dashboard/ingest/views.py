"""``POST /v1/traces`` and ``/v1/metrics``: the OTLP/HTTP receiver (binary protobuf or
JSON, gzip or not).

Answers as the OTLP/HTTP specification says: 200 with an ExportTraceServiceResponse
in the request's encoding (``partial_success`` counts spans not stored and says
why); 400/413 with a ``google.rpc.Status`` body for payloads it will never accept;
415 for other content types or encodings; 503 with ``Retry-After`` when the span
writer's queue has no room (OTLP exporters retry). Only a bearer API token whose
user has ``traces.ingest_spans`` is accepted: no session, hence no CSRF.

The view is synchronous (parsing is CPU work); under ASGI it runs in a worker thread.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.protobuf.json_format import MessageToJson  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from dashboard.api.tokens import authenticate_token
from dashboard.traces import conf as traces_conf
from dashboard.traces import tracing

from . import conf, metrics, stats
from .decode import JSON, PROTOBUF, IngestError, decompress, media_type, parse, read_body
from .spans import Limits, convert, masker_for

logger = logging.getLogger(__name__)

# gRPC status codes used in google.rpc.Status bodies.
_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 3, 415: 3, 503: 14}


def _encode(message: Message, kind: str) -> tuple[bytes, str]:
    if kind == JSON:
        return MessageToJson(message, indent=None).encode(), JSON
    return message.SerializeToString(), PROTOBUF


def _status(code: int, message: str, kind: str, **headers: str) -> HttpResponse:
    body, content_type = _encode(Status(code=_CODES.get(code, 2), message=message), kind)
    response = HttpResponse(body, status=code, content_type=content_type)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _authorize(request: HttpRequest) -> tuple[int, str] | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        if getattr(request, "user", None) is not None and request.user.is_authenticated:
            # A browser session never ingests (no CSRF here): refused, as the fleet's
            # report endpoint refuses one.
            return 403, "ingest takes an API token, not a session: Authorization: Bearer <token>"
        return 401, "an API token is required: Authorization: Bearer <token>"
    token = authenticate_token(credentials)
    if token is None:
        return 401, "invalid, expired or revoked API token"
    if not token.user.has_perm(conf.PERMISSION):
        return 403, f"permission {conf.PERMISSION!r} required"
    return None


def _declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.headers.get("Content-Length", ""))
    except ValueError:
        return None


@csrf_exempt
@require_POST
def traces(request: HttpRequest) -> HttpResponse:
    content_type = request.headers.get("Content-Type", "")
    kind = media_type(content_type)
    reply_kind = JSON if kind == JSON else PROTOBUF
    refused = _authorize(request)
    if refused is not None:
        code, message = refused
        extra = {"WWW_Authenticate": "Bearer"} if code == 401 else {}
        return _status(code, message, reply_kind, **extra)
    processor = tracing.processor()
    if processor is None:
        return _status(404, "span storage is off on this server (TRACES_ENABLED)", reply_kind)
    stats.add(requests=1)
    try:
        if kind not in (JSON, PROTOBUF):
            raise IngestError(415, f"unsupported Content-Type {content_type!r}")
        limit = conf.max_body_bytes()
        raw = read_body(request, limit=limit, declared=_declared_length(request))
        body = decompress(raw, encoding=request.headers.get("Content-Encoding", ""), limit=limit)
        message = parse(ExportTraceServiceRequest(), body, content_type=content_type)
        limits = _limits()
        masker = masker_for(traces_conf.masked_keys(), traces_conf.masked_value_patterns())
        converted = convert(message.resource_spans, limits=limits, masker=masker)
    except IngestError as exc:
        stats.add(bad_requests=1)
        return _status(exc.status, exc.message, reply_kind)
    queued = processor.offer(converted.rows)
    if queued is None:
        stats.add(refused_requests=1, refused_spans=len(converted.rows))
        return _status(
            503,
            "the span writer's queue is full: retry later",
            reply_kind,
            Retry_After=str(conf.retry_after()),
        )
    lost = len(converted.rows) - queued
    if lost:
        converted.reject("spans dropped: the span writer's queue filled up", lost)
    stats.add(accepted_spans=queued, rejected_spans=converted.rejected)
    answer = ExportTraceServiceResponse()
    if converted.rejected:
        answer.partial_success.rejected_spans = converted.rejected
        answer.partial_success.error_message = converted.error_message()
    body, reply_type = _encode(answer, reply_kind)
    return HttpResponse(body, status=200, content_type=reply_type)


def _limits() -> Limits:
    return Limits(
        max_spans=conf.max_spans(),
        max_attributes=conf.max_attributes(),
        max_events=conf.max_events(),
        max_value_length=conf.max_value_length(),
    )


@csrf_exempt
@require_POST
def metrics_view(request: HttpRequest) -> HttpResponse:
    """OTLP metrics, stored in the request (see ``metrics``); the same auth and limits
    as spans (``INGEST_MAX_SPANS`` counts data points here)."""
    content_type = request.headers.get("Content-Type", "")
    kind = media_type(content_type)
    reply_kind = JSON if kind == JSON else PROTOBUF
    refused = _authorize(request)
    if refused is not None:
        code, message = refused
        extra = {"WWW_Authenticate": "Bearer"} if code == 401 else {}
        return _status(code, message, reply_kind, **extra)
    try:
        if kind not in (JSON, PROTOBUF):
            raise IngestError(415, f"unsupported Content-Type {content_type!r}")
        limit = conf.max_body_bytes()
        raw = read_body(request, limit=limit, declared=_declared_length(request))
        body = decompress(raw, encoding=request.headers.get("Content-Encoding", ""), limit=limit)
        parsed = parse(ExportMetricsServiceRequest(), body, content_type=content_type)
        masker = masker_for(traces_conf.masked_keys(), traces_conf.masked_value_patterns())
        points = metrics.convert(parsed.resource_metrics, limits=_limits(), masker=masker)
    except IngestError as exc:
        return _status(exc.status, exc.message, reply_kind)
    try:
        metrics.store(points, max_series=conf.max_metric_series())
        if metrics.cleanup_due():
            metrics.cleanup(now=timezone.now(), max_age=traces_conf.max_age())
    except DatabaseError:
        logger.exception("could not store %d metric points", len(points.points))
        return _status(
            503, "metrics could not be stored: retry later", reply_kind,
            Retry_After=str(conf.retry_after()),
        )  # fmt: skip
    answer = ExportMetricsServiceResponse()
    if points.rejected:
        answer.partial_success.rejected_data_points = points.rejected
        answer.partial_success.error_message = points.error_message()
    body, reply_type = _encode(answer, reply_kind)
    return HttpResponse(body, status=200, content_type=reply_type)
