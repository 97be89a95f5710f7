"""The codec registry: one registration adds a codec everywhere; unknown names are clear."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience.checkpoint import (
    CODECS,
    Codec,
    CodecRegistry,
    StateCheckpointManager,
    UnknownCodecError,
    register_codec,
)
from resilience.checkpoint.compression import compress, decompress
from resilience.errors import CheckpointCorruptedError, ConfigTypeError, ConfigValueError

BUILT_IN = ("zstd", "gzip", "none")


def _xor(data: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in data)


def _xor_bounded(data: bytes, raw_size: int) -> bytes:
    return _xor(data[: raw_size + 1])


XOR = Codec(name="xor", compress=_xor, decompress=_xor_bounded, description="test codec")


@pytest.fixture
def xor_codec() -> Iterator[Codec]:
    register_codec(XOR)
    yield XOR
    CODECS.unregister("xor")


def test_the_built_in_codecs_are_registered_with_zstd_first() -> None:
    assert CODECS.names()[:3] == BUILT_IN
    assert all(codec.description for codec in CODECS)


def test_an_unknown_compression_names_the_setting_and_lists_the_registered_codecs(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigValueError, match="compression") as caught:
        StateCheckpointManager(tmp_path, compression="lz4")
    message = str(caught.value)
    assert "'lz4'" in message
    for name in BUILT_IN:
        assert repr(name) in message


def test_looking_up_an_unknown_codec_lists_the_known_ones() -> None:
    with pytest.raises(UnknownCodecError) as caught:
        CODECS.get("brotli")
    assert str(caught.value) == "unknown codec 'brotli', expected one of 'zstd', 'gzip', 'none'"
    assert isinstance(caught.value, ValueError)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (str(again), again.known) == (str(caught.value), caught.value.known)


def test_a_registered_codec_round_trips_through_the_manager(
    tmp_path: Path, xor_codec: Codec
) -> None:
    manager = StateCheckpointManager(tmp_path, compression="xor", signing_key="k")
    state = {"step": 4, "text": "hello" * 100}
    checkpoint_id = manager.save_checkpoint(state, "agent", "wf")
    assert manager.get_checkpoint_info(checkpoint_id)["codec"] == "xor"
    assert manager.verify_checkpoint(checkpoint_id)
    # Another manager with another default still reads it: the blob names its codec.
    assert StateCheckpointManager(tmp_path, signing_key="k").load_checkpoint(checkpoint_id) == state


def test_a_blob_whose_codec_is_no_longer_registered_is_refused_naming_the_codecs(
    tmp_path: Path,
) -> None:
    register_codec(XOR)
    try:
        manager = StateCheckpointManager(tmp_path, compression="xor")
        checkpoint_id = manager.save_checkpoint({"n": 1}, "agent", "wf")
    finally:
        CODECS.unregister("xor")
    with pytest.raises(CheckpointCorruptedError, match="unknown codec 'xor'.*'zstd'"):
        manager.load_checkpoint(checkpoint_id)


def test_registering_a_name_twice_is_refused_unless_replacing() -> None:
    registry = CodecRegistry()
    registry.register(XOR)
    with pytest.raises(ConfigValueError, match="already registered"):
        registry.register(XOR)
    other = Codec(name="xor", compress=bytes, decompress=lambda data, size: data)
    assert registry.register(other, replace=True) is other
    assert registry.get("xor") is other
    assert registry.unregister("xor") is other
    assert "xor" not in registry and len(registry) == 0


@pytest.mark.parametrize("name", ["", "Zstd", "1x", "a b", "x" * 17, "ü", None, 3])
def test_a_malformed_codec_name_is_refused(name: Any) -> None:
    with pytest.raises(ConfigValueError, match="codec name"):
        Codec(name=name, compress=bytes, decompress=lambda data, size: data)


def test_codec_functions_must_be_callable_and_registry_entries_codecs() -> None:
    with pytest.raises(ConfigTypeError, match="decompress must be callable"):
        Codec(name="bad", compress=bytes, decompress="nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="must be a Codec"):
        CodecRegistry().register("zstd")  # type: ignore[arg-type]


def test_a_codec_that_returns_the_wrong_size_is_an_error(xor_codec: Codec) -> None:
    payload = compress("xor", b"abcdef")
    with pytest.raises(ValueError, match="decompressed to 6 bytes, header says 5"):
        decompress("xor", payload, 5)
    with pytest.raises(ValueError, match="above the 4 allowed"):
        decompress("xor", payload, 6, max_size=4)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.binary(max_size=4096))
def test_every_registered_codec_round_trips_any_bytes(data: bytes) -> None:
    register_codec(XOR, replace=True)
    try:
        for codec in CODECS:
            assert decompress(codec.name, compress(codec.name, data), len(data)) == data
    finally:
        CODECS.unregister("xor")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(state=st.dictionaries(st.text(max_size=8), JSON, max_size=5))
def test_every_registered_codec_round_trips_any_state_through_the_manager(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    register_codec(XOR, replace=True)
    try:
        for codec in CODECS:
            manager = StateCheckpointManager(tmp_path / codec.name, compression=codec.name)
            checkpoint_id = manager.save_checkpoint(state, "agent", "wf")
            assert manager.load_checkpoint(checkpoint_id) == state
    finally:
        CODECS.unregister("xor")


_FORK_AFTER_LARGE_COMPRESS = """
import os, sys, threading
from resilience.checkpoint import compression as c
c.ZSTD_THREADS = 2
data = bytes(range(256)) * (c.ZSTD_THREADS_MIN_SIZE // 256 + 1)
c.compress("zstd", data)  # on this thread
done, stop = threading.Event(), threading.Event()
def other():
    c.compress("zstd", data)  # and on a thread that lives on across the fork
    done.set()
    stop.wait()
helper = threading.Thread(target=other)
helper.start()
done.wait()
pid = os.fork()
if pid == 0:
    out = c.compress("zstd", data)
    os._exit(0 if c.decompress("zstd", out, len(data), len(data)) == data else 2)
_, status = os.waitpid(pid, 0)
stop.set()
helper.join()
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_child_forked_after_large_compressions_can_compress() -> None:
    """A zstd compressor with worker threads keeps them while it lives; in a forked
    child they do not exist, and using or freeing the parent's compressor there waited
    for them forever (the child hung at fork or at its first large save)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        result = subprocess.run(
            [sys.executable, "-c", _FORK_AFTER_LARGE_COMPRESS], env=env, timeout=30
        )
    except subprocess.TimeoutExpired:  # a hang guard, not a speed check
        pytest.fail("the forked child hung")
    assert result.returncode == 0
