"""Compression codecs for checkpoint payloads: ``zstd`` (default), ``gzip``, ``none``.

The codec's name is written into every blob header, so a checkpoint stays readable
after the manager's default codec changes. Decompression is bounded by the raw size
recorded in the (already verified) header, and that size by the manager's
``max_state_size``: without a signing key anyone can write a header whose hashes
verify, so the recorded size alone would let a crafted blob claim gigabytes.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from typing import Final

import zstandard

from resilience.errors import ConfigValueError

__all__ = [
    "CODECS",
    "DEFAULT_MAX_STATE_SIZE",
    "GZIP_LEVEL",
    "ZSTD_LEVEL",
    "compress",
    "decompress",
    "resolve_codec",
]

CODECS: Final = ("zstd", "gzip", "none")
DEFAULT_MAX_STATE_SIZE: Final = 256 * 1024 * 1024
"""Bytes of serialized state a checkpoint may hold (and a load may expand to)."""
ZSTD_LEVEL: Final = 1
"""Level 1: 1.5x faster than the library default (3) on agent state for ~4% more bytes
(``make bench BENCH=checkpoint``); negative levels save little more time and lose a third
of the ratio."""
ZSTD_THREADS_MIN_SIZE: Final = 4 * 1024 * 1024
"""States at least this large are compressed by zstd worker threads (one frame, same
format). Below it the jobs are too small to split: 1 MB took as long with 2 threads."""
ZSTD_THREADS: Final = min(4, os.cpu_count() or 1)
GZIP_LEVEL: Final = 6

# zstandard (de)compressor objects are not thread-safe: one pair per thread, reused.
_local = threading.local()


def resolve_codec(compression: object) -> str:
    """Map the ``compression`` argument to a codec name.

    Args:
        compression: ``True`` (zstd), ``False`` (none), or one of ``"zstd"``,
            ``"gzip"``, ``"none"``.

    Raises:
        ConfigValueError: any other value (a ``ValueError`` naming ``compression``).

    Returns:
        ``"zstd"``, ``"gzip"`` or ``"none"``.
    """
    if compression is True:
        return "zstd"
    if compression is False:
        return "none"
    if isinstance(compression, str) and compression in CODECS:
        return compression
    raise ConfigValueError(
        f"compression must be True, False, 'zstd', 'gzip' or 'none', got {compression!r}"
    )


def _zstd_compressor(size: int) -> zstandard.ZstdCompressor:
    if size >= ZSTD_THREADS_MIN_SIZE and ZSTD_THREADS > 1:
        threaded: zstandard.ZstdCompressor | None = getattr(_local, "threaded", None)
        if threaded is None:
            threaded = _local.threaded = zstandard.ZstdCompressor(
                level=ZSTD_LEVEL, threads=ZSTD_THREADS
            )
        return threaded
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def compress(codec: str, data: bytes) -> bytes:
    """Compress ``data`` with ``codec`` (a name from :data:`CODECS`)."""
    if codec == "zstd":
        return _zstd_compressor(len(data)).compress(data)
    if codec == "gzip":
        return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if codec == "none":
        return data
    raise ValueError(f"unknown codec {codec!r}")


def decompress(
    codec: str, data: bytes, raw_size: int, max_size: int = DEFAULT_MAX_STATE_SIZE
) -> bytes:
    """Decompress ``data``; never produces more than ``raw_size`` bytes.

    Raises:
        ValueError: unknown codec, malformed data, output of another size, or a
            ``raw_size`` above ``max_size`` (refused before anything is allocated).
    """
    if raw_size > max_size:
        raise ValueError(f"header says {raw_size} bytes of state, above the {max_size} allowed")
    if codec == "zstd":
        try:
            # A frame may claim any content size; refuse one that disagrees with the header
            # before the decompressor allocates for it.
            declared = zstandard.frame_content_size(data)
            if declared != raw_size:
                raise ValueError(f"zstd frame declares {declared} bytes, header says {raw_size}")
            out = _zstd_decompressor().decompress(data, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from exc
    elif codec == "gzip":
        inflater = zlib.decompressobj(wbits=31)  # 31: gzip container
        try:
            out = inflater.decompress(data, raw_size + 1)
        except zlib.error as exc:
            raise ValueError(f"gzip: {exc}") from exc
        if not inflater.eof:
            raise ValueError("gzip: truncated or larger than the header says")
    elif codec == "none":
        out = data
    else:
        raise ValueError(f"unknown codec {codec!r}")
    if len(out) != raw_size:
        raise ValueError(f"decompressed to {len(out)} bytes, header says {raw_size}")
    return out
