"""HashedWriter: pieces hashed and written in order on its thread; a write failure reaches the caller."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from backup_ops.core.hashed_writer import HashedWriter


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
