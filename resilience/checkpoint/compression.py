"""Compression codecs for checkpoint payloads: one registry, ``zstd`` (default), ``gzip``, ``none``.

Every codec is a :class:`Codec` registered once in :data:`CODECS`; the manager, the blob
reader, the Django store, its settings check, the admin's codec filter and the docs all
read that registry, so adding a codec is one :func:`register_codec` call::

    register_codec(Codec(name="lz4", compress=..., decompress=..., description="LZ4 frame"))

The codec's name is written into every blob header, so a checkpoint stays readable
after the manager's default codec changes (as long as its codec stays registered).
Decompression is bounded by the raw size recorded in the (already verified) header,
and that size by the manager's ``max_state_size``: without a signing key anyone can
write a header whose hashes verify, so the recorded size alone would let a crafted
blob claim gigabytes.

Concurrency: registration replaces the registry's mapping under a lock (copy on
write); lookups read the current mapping without locking, so the save/load path pays
one dict lookup.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import zstandard

from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "CODECS",
    "CODEC_NAME_MAX_LENGTH",
    "Codec",
    "CodecRegistry",
    "DEFAULT_CODEC",
    "DEFAULT_MAX_STATE_SIZE",
    "GZIP_LEVEL",
    "UnknownCodecError",
    "ZSTD_LEVEL",
    "compress",
    "decompress",
    "register_codec",
    "resolve_codec",
]

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
DEFAULT_CODEC: Final = "zstd"
"""The codec of ``compression=True`` (``False`` is ``"none"``)."""
CODEC_NAME_MAX_LENGTH: Final = 16
"""Longest codec name (it is stored in blob headers and in index columns)."""
_NAME = re.compile(rf"[a-z][a-z0-9_-]{{0,{CODEC_NAME_MAX_LENGTH - 1}}}")

# zstandard (de)compressor objects are not thread-safe: one pair per thread, reused.
_local = threading.local()


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """A named compression codec.

    Args:
        name: written into blob headers; lowercase letters, digits, ``_`` or ``-``,
            starting with a letter, at most :data:`CODEC_NAME_MAX_LENGTH` characters.
        compress: ``data -> compressed bytes``.
        decompress: ``(data, raw_size) -> bytes``. ``raw_size`` is the size the
            verified header records; the function must stop once it has produced more
            than ``raw_size`` bytes (never inflate unboundedly) and raise ``ValueError``
            on malformed data. The caller checks the output's length.
        description: one line for the admin and the docs.

    Raises:
        ConfigValueError: a malformed name.
        ConfigTypeError: ``compress`` or ``decompress`` not callable.
    """

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ConfigValueError(
                f"codec name must be 1-{CODEC_NAME_MAX_LENGTH} lowercase letters, digits, "
                f"_ or - starting with a letter, got {self.name!r}"
            )
        for field in ("compress", "decompress"):
            if not callable(getattr(self, field)):
                raise ConfigTypeError(f"{field} must be callable, got {getattr(self, field)!r}")


class UnknownCodecError(ConfigValueError):
    """No codec of that name is registered; the message lists the known ones."""

    def __init__(self, name: object, known: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown codec {name!r}, expected one of {', '.join(repr(n) for n in known)}"
        )
        self.name = name
        self.known = known

    def __reduce__(self) -> tuple[type[UnknownCodecError], tuple[object, tuple[str, ...]]]:
        return (type(self), (self.name, self.known))


class CodecRegistry:
    """Codecs by name (see the module doc for the concurrency model)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codecs: dict[str, Codec] = {}

    def __repr__(self) -> str:
        return f"CodecRegistry({list(self._codecs)!r})"

    def register(self, codec: Codec, *, replace: bool = False) -> Codec:
        """Add ``codec``; returns it.

        Raises:
            ConfigTypeError: ``codec`` is not a :class:`Codec`.
            ConfigValueError: a codec of that name exists and ``replace`` is false.
        """
        if not isinstance(codec, Codec):
            raise ConfigTypeError(f"codec must be a Codec, got {codec!r}")
        with self._lock:
            if codec.name in self._codecs and not replace:
                raise ConfigValueError(
                    f"a codec named {codec.name!r} is already registered (pass replace=True)"
                )
            self._codecs = {**self._codecs, codec.name: codec}
        return codec

    def unregister(self, name: str) -> Codec | None:
        """Remove the codec ``name`` (blobs written with it become unreadable); returns it."""
        with self._lock:
            codecs = dict(self._codecs)
            removed = codecs.pop(name, None)
            self._codecs = codecs
        return removed

    def get(self, name: object) -> Codec:
        """The codec ``name``.

        Raises:
            UnknownCodecError: none registered under that name (lists the known ones).
        """
        codec = self._codecs.get(name) if isinstance(name, str) else None
        if codec is None:
            raise UnknownCodecError(name, self.names())
        return codec

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._codecs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._codecs

    def __iter__(self) -> Iterator[Codec]:
        return iter(tuple(self._codecs.values()))

    def __len__(self) -> int:
        return len(self._codecs)


CODECS: Final = CodecRegistry()
"""The process-wide codec registry."""
register_codec: Final = CODECS.register


def resolve_codec(compression: object) -> str:
    """Map the ``compression`` argument to a registered codec's name.

    Args:
        compression: ``True`` (:data:`DEFAULT_CODEC`), ``False`` (``"none"``), or the
            name of a registered codec.

    Raises:
        ConfigValueError: any other value (a ``ValueError`` naming ``compression`` and
            listing the registered codecs).

    Returns:
        The codec's name.
    """
    if compression is True:
        return DEFAULT_CODEC
    if compression is False:
        return "none"
    if compression in CODECS:
        return str(compression)
    raise ConfigValueError(
        f"compression must be True, False or a registered codec "
        f"({', '.join(repr(n) for n in CODECS.names())}), got {compression!r}"
    )


def compress(codec: str, data: bytes) -> bytes:
    """Compress ``data`` with the registered codec ``codec``.

    Raises:
        UnknownCodecError: ``codec`` is not registered.
    """
    return CODECS.get(codec).compress(data)


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
    out = CODECS.get(codec).decompress(data, raw_size)
    if len(out) != raw_size:
        raise ValueError(f"decompressed to {len(out)} bytes, header says {raw_size}")
    return out


# ---- the built-in codecs ------------------------------------------------------------------


def _zstd_compressor(size: int) -> zstandard.ZstdCompressor:
    if size >= ZSTD_THREADS_MIN_SIZE and ZSTD_THREADS > 1:
        # Made per call, never kept: it owns worker threads while it lives, and a child
        # forked meanwhile would wait for them forever (using or freeing it). Starting
        # them costs far less than compressing megabytes.
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=ZSTD_THREADS)
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _zstd_compress(data: bytes) -> bytes:
    return _zstd_compressor(len(data)).compress(data)


def _zstd_decompress(data: bytes, raw_size: int) -> bytes:
    try:
        # A frame may claim any content size; refuse one that disagrees with the header
        # before the decompressor allocates for it.
        declared = zstandard.frame_content_size(data)
        if declared != raw_size:
            raise ValueError(f"zstd frame declares {declared} bytes, header says {raw_size}")
        return _zstd_decompressor().decompress(data, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from exc


def _gzip_compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def _gzip_decompress(data: bytes, raw_size: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip container
    try:
        out = inflater.decompress(data, raw_size + 1)
    except zlib.error as exc:
        raise ValueError(f"gzip: {exc}") from exc
    if not inflater.eof:
        raise ValueError("gzip: truncated or larger than the header says")
    return out


def _identity(data: bytes) -> bytes:
    return data


def _identity_bounded(data: bytes, raw_size: int) -> bytes:
    return data


register_codec(
    Codec(
        name=DEFAULT_CODEC,
        compress=_zstd_compress,
        decompress=_zstd_decompress,
        description=f"Zstandard, level {ZSTD_LEVEL} (default)",
    )
)
register_codec(
    Codec(
        name="gzip",
        compress=_gzip_compress,
        decompress=_gzip_decompress,
        description=f"gzip, level {GZIP_LEVEL}",
    )
)
register_codec(
    Codec(
        name="none",
        compress=_identity,
        decompress=_identity_bounded,
        description="stored uncompressed",
    )
)
