"""HashedWriter: pieces hashed and written in order on its thread; a write failure reaches the caller. SideDigest."""

from __future__ import annotations

import errno
import gc
import hashlib
import hmac
import os
import threading
import time

import pytest

from backup_ops.core.hashed_writer import HashedWriter, SideDigest


def test_pieces_are_hashed_and_written_in_order() -> None:
    written: list[bytes] = []
    pieces = [os.urandom(n) for n in (1, 70_000, 0, 3, 300_000, 17)]
    with HashedWriter(written.append) as writer:
        for piece in pieces:
            writer.put(piece)
        writer.drain()
        assert b"".join(written) == b"".join(pieces)
    assert writer.digest.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert writer.size == sum(map(len, pieces))


def test_a_failed_write_is_raised_in_the_callers_thread_and_stops_the_writing() -> None:
    written: list[bytes] = []
    full = OSError(errno.ENOSPC, "No space left on device")

    def write(data: bytes) -> None:
        if len(written) == 2:
            raise full
        written.append(data)

    writer = HashedWriter(write)
    try:
        with pytest.raises(OSError) as raised:
            for _ in range(50):
                writer.put(b"x" * 1000)
            writer.drain()
        assert raised.value is full and writer.failure is full
        assert len(written) == 2  # nothing written after the failure
        with pytest.raises(OSError):
            writer.put(b"more")
    finally:
        writer.close()
    writer.close()  # idempotent


def side_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "side-digest" and t.is_alive()]


def test_side_digest_hashes_small_input_inline_and_large_input_on_a_thread() -> None:
    small = SideDigest(hashlib.sha256(), inline=1000)
    small.update(b"x" * 999)
    assert not side_threads()  # under the inline size: no thread
    assert small.hexdigest() == hashlib.sha256(b"x" * 999).hexdigest()

    pieces = [os.urandom(n) for n in (600, 600, 70_000, 1, 300_000)]
    key = b"k" * 32
    large = SideDigest(hmac.new(key, digestmod="sha1"), inline=1000)
    for piece in pieces:
        large.update(piece)
    assert len(side_threads()) == 1  # past the inline size the rest went to a thread
    assert large.digest() == hmac.new(key, b"".join(pieces), digestmod="sha1").digest()
    assert not side_threads()  # the digest stopped it


def test_an_abandoned_side_digest_stops_its_thread() -> None:
    abandoned = SideDigest(hashlib.sha256(), inline=10)
    abandoned.update(b"y" * 100)
    assert len(side_threads()) == 1
    del abandoned
    gc.collect()
    deadline = time.monotonic() + 5
    while side_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not side_threads()


def test_close_called_on_the_writers_own_thread_neither_joins_itself_nor_blocks() -> None:
    """A SideDigest's finalizer may run wherever a collection runs, even on the digest's own thread."""
    closed = threading.Event()
    writer: HashedWriter

    def write(data: bytes) -> None:
        writer.close()  # on the writer's thread, as a finalizer would
        closed.set()

    writer = HashedWriter(write)
    writer.put(b"x")
    assert closed.wait(5)
    writer._thread.join(5)
    assert not writer._thread.is_alive()
