"""Read an OTLP/HTTP request body: bounded gunzip, then protobuf or the OTLP JSON mapping.

Every failure is an ``IngestError`` carrying the HTTP status to answer (400, 413,
415); nothing a sender puts in a body may escape as another exception (a 500).
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, Protocol, TypeVar

import orjson
from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_READ_CHUNK = 64 * 1024
# OTLP JSON writes trace and span ids as hex; the proto3 JSON mapping of bytes is base64.
_HEX_ID_KEYS = ("traceId", "spanId", "parentSpanId")

M = TypeVar("M", bound=Message)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class IngestError(Exception):
    """A request the receiver refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def read_body(stream: Readable, *, limit: int, declared: int | None) -> bytes:
    """At most ``limit`` bytes from ``stream``; 413 when the body is longer."""
    if declared is not None and declared > limit:
        raise IngestError(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise IngestError(413, f"body exceeds the limit of {limit} bytes")
    return b"".join(chunks)


def gunzip(data: bytes, *, limit: int) -> bytes:
    """Decompress gzip ``data`` (one or more members), stopping as soon as the output
    passes ``limit`` bytes: a small bomb never expands beyond ``limit + 1`` bytes."""
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while pending and not inflater.eof:
                # max_length > 0 always (0 would mean "no limit"): out stays <= limit here.
                out += inflater.decompress(pending, limit + 1 - len(out))
                if len(out) > limit:
                    raise IngestError(
                        413, f"body exceeds the limit of {limit} bytes once decompressed"
                    )
                pending = inflater.unconsumed_tail
        except zlib.error as exc:
            raise IngestError(400, f"body is not valid gzip: {exc}") from exc
        if not inflater.eof:
            raise IngestError(400, "body is not valid gzip: truncated")
        rest = inflater.unused_data
        if not rest.strip(b"\0"):
            return bytes(out)


def decompress(data: bytes, *, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        return gunzip(data, limit=limit)
    raise IngestError(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none")


def _hex_to_base64(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # a wrong type: ParseDict names it
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""  # not hex: an empty id, rejected per span by the converter
    return base64.b64encode(raw).decode()


def _fix_ids(node: Any) -> None:
    if isinstance(node, dict):
        for key in _HEX_ID_KEYS:
            if key in node:
                node[key] = _hex_to_base64(node[key])
        for child in ("resourceSpans", "scopeSpans", "spans", "links"):
            items = node.get(child)
            if isinstance(items, list):
                for item in items:
                    _fix_ids(item)


def parse(message: M, body: bytes, *, content_type: str) -> M:
    """Fill ``message`` from ``body`` in the encoding ``content_type`` names."""
    kind = media_type(content_type)
    if kind == PROTOBUF:
        try:
            message.ParseFromString(body)
        except Exception as exc:  # DecodeError, RecursionError: all mean a bad payload
            raise IngestError(400, f"body is not a valid {message.DESCRIPTOR.name}: {exc}") from exc
        return message
    if kind == JSON:
        try:
            data = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:
            raise IngestError(400, f"body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise IngestError(400, "body is not valid JSON: nested too deeply") from exc
        if not isinstance(data, dict):
            raise IngestError(400, f"body must be a JSON object, got {type(data).__name__}")
        _fix_ids(data)
        try:
            ParseDict(data, message, ignore_unknown_fields=True)
        except Exception as exc:  # ParseError, RecursionError, binascii.Error, ...
            raise IngestError(400, f"body is not a valid {message.DESCRIPTOR.name}: {exc}") from exc
        return message
    raise IngestError(415, f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}")
