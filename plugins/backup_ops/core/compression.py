"""Dump compression in this process: gzip through ISA-L or zlib, zstd through zstandard, and the bounded
decompressors a restore reads them back with.

Which engine compresses what (``compression`` in the config; docs/configuration.md has the measurements):

* ``gzip:1``–``gzip:3``: ISA-L (the ``isal`` package), several times faster than zlib at about the size
  of ``gzip -6``; ``gzip:4``–``gzip:9``: zlib, the levels ISA-L does not have. Either way one standard
  gzip member (mtime 0, no file name, so equal input gives equal bytes) that any ``gunzip`` reads.
* ``zstd:N``: one standard zstd frame with a content checksum, from ``zstandard`` with ``zstd_threads(N)``
  worker threads in jobs of at most 4 MiB; ``zstd -d`` reads it. The bytes do not depend on the number of
  workers, so equal input gives equal bytes on any machine.
* ``lz4`` is not compressed here: pg_dump compresses it itself (``--compress=lz4``), and the ``lz4`` tool
  decompresses it. ``compressor_for`` returns None for it, as for ``none``.

Decompression yields at most ``CHUNK_SIZE`` bytes per step whatever the input, so a crafted member (a
few kilobytes that inflate to gigabytes) cannot exhaust memory, and ends only when the stream ended where
its format says it may: a truncated or damaged dump raises VerificationError with one sentence.

The libraries are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Protocol, cast

from backup_ops.core.errors import ArchiveError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE

if TYPE_CHECKING:
    from backup_ops.core.config.model import Compression

ISAL_LEVELS = range(1, 4)
"""gzip levels ISA-L compresses (its 0 is a different, faster-than-level-1 mode that backup-ops does not offer)."""

ZSTD_MAX_THREADS = 8
"""zstd worker threads at most: eight keep ahead of any pg_dump, which writes one stream."""

ZSTD_MEMORY_BUDGET = 64 << 20
"""What zstd's workers may take together (the backup's peak RSS target is 150 MB): level 3 gets up to five
workers, 9 two, 10 and above one (19: about 100 MB on its own)."""

ZSTD_JOB_SIZE = 4 << 20
"""Input bytes per zstd job at most. zstd's default is four windows (8 MiB at level 3, 16 MiB at 9, 32 MiB at
19); measured on a dump, level 9 on two workers took 126 MB with it and 51 MB with 4 MiB, for the same size."""

IN_PROCESS_METHODS = frozenset({"none", "gzip", "zstd"})
"""Methods ``decompress_chunks`` reads; ``lz4`` needs the ``lz4`` tool."""

_DAMAGED = "the archive is damaged"
_TRUNCATED = "it is truncated"
_GZIP_WBITS = 31  # a gzip container (header and CRC-32/size trailer), not zlib's or raw deflate
_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # 0x184D2A50–0x184D2A5F: skippable frames (metadata, no content)


class DamagedStreamError(VerificationError):
    """Compressed data that is damaged or truncated; ``problem`` says what, without the dump's name."""

    def __init__(self, member: str, problem: str, consequence: str) -> None:
        super().__init__(f"Dump {member!r} {problem}: {consequence}.")
        self.problem = problem


class StreamCompressor(Protocol):
    """Compresses a stream fed in pieces: ``compress`` each piece, then ``flush`` once for the end."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def zstd_threads(level: int) -> int:
    """Worker threads for zstd ``level``: one per CPU, at most ``ZSTD_MAX_THREADS`` and ``ZSTD_MEMORY_BUDGET``.

    One worker takes its level's match-finder tables, its window and two job buffers: about 11 MB at
    level 3, 22 MB at 9, 97 MB at 19 (there is always one worker, whatever it takes).
    """
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(level)
    worker = params.estimated_compression_context_size() + (1 << params.window_log) + 2 * ZSTD_JOB_SIZE
    return max(1, min(os.cpu_count() or 1, ZSTD_MAX_THREADS, ZSTD_MEMORY_BUDGET // worker))


def compressor_for(compression: Compression) -> StreamCompressor | None:
    """A fresh compressor for one dump, or None when this process does not compress it (``none``, ``lz4``)."""
    if compression.method == "gzip":
        if compression.level in ISAL_LEVELS:
            from isal import isal_zlib

            isal: StreamCompressor = isal_zlib.compressobj(compression.level, isal_zlib.DEFLATED, _GZIP_WBITS)
            return isal
        return zlib.compressobj(compression.level, zlib.DEFLATED, _GZIP_WBITS)
    if compression.method == "zstd":
        import zstandard

        level = compression.level
        default_job_log = max(20, zstandard.ZstdCompressionParameters.from_level(level).window_log + 2)
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=zstd_threads(level), write_checksum=True, job_size=min(ZSTD_JOB_SIZE, 1 << default_job_log))
        zstd: StreamCompressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
        return zstd
    return None


def engine(compression: Compression) -> str:
    """What compresses a dump, for logs and docs: ``gzip level 3 (ISA-L)``, ``zstd level 3 (zstandard, 2 threads)``."""
    if compression.method == "gzip":
        return f"gzip level {compression.level} ({'ISA-L' if compression.level in ISAL_LEVELS else 'zlib'})"
    if compression.method == "zstd":
        threads = zstd_threads(compression.level)
        return f"zstd level {compression.level} (zstandard, {threads} thread{'s' if threads != 1 else ''})"
    if compression.method == "lz4":
        return f"lz4 level {compression.level} (pg_dump)"
    return "no compression"


def decompress_chunks(chunks: Iterable[bytes], method: str, member: str) -> Iterator[bytes]:
    """The decompressed bytes of ``chunks`` (a dump compressed with ``method``), at most CHUNK_SIZE per step.

    ``member`` names the dump in error messages. Raises DamagedStreamError (a VerificationError) when the
    data is damaged or ends before its stream does, ArchiveError for a method not in ``IN_PROCESS_METHODS``.
    """
    if method in ("none", ""):
        return (chunk for chunk in chunks if chunk)
    if method == "gzip":
        return _gunzip(chunks, member)
    if method == "zstd":
        return _unzstd(chunks, member)
    raise ArchiveError(f"Dump {member!r} is compressed with {method!r}, which backup-ops cannot decompress in "
                       "process; restore it by hand.", retryable=False)


def _gunzip(chunks: Iterable[bytes], member: str) -> Iterator[bytes]:
    """gzip members one after another (``cat a.gz b.gz`` is valid gzip), through ISA-L's inflate."""
    from isal import isal_zlib

    isal_error = cast("type[Exception]", isal_zlib.error)  # its stub calls it an instance
    decompressor = isal_zlib.decompressobj(_GZIP_WBITS)
    pending = False  # inside a member: its end (the trailer, CRC and size checked) has not been seen
    try:
        for chunk in chunks:
            data = chunk
            while data:
                pending = True
                out = decompressor.decompress(data, CHUNK_SIZE)
                if out:
                    yield out
                if decompressor.eof:
                    data = decompressor.unused_data
                    decompressor, pending = isal_zlib.decompressobj(_GZIP_WBITS), False
                else:
                    data = decompressor.unconsumed_tail
            # Output still held inside the decompressor: drain it before taking more input.
            while pending and not decompressor.eof and (out := decompressor.decompress(b"", CHUNK_SIZE)):
                yield out
    except isal_error as exc:
        raise DamagedStreamError(member, f"is not valid gzip ({exc})", _DAMAGED) from None
    if pending and not decompressor.eof:
        raise DamagedStreamError(member, "ends in the middle of its gzip stream", _TRUNCATED)


def _unzstd(chunks: Iterable[bytes], member: str) -> Iterator[bytes]:
    """zstd frames one after another; zstandard checks each frame's content, ``_ZstdFrames`` that the last one ended.

    zstandard's readers stop without an error when the input ends inside a frame, so the frames are
    followed on the compressed bytes as they pass (a few header fields per 128 KiB block).
    """
    import zstandard

    source = _ChunkReader(chunks)
    reader = zstandard.ZstdDecompressor().stream_reader(cast("IO[bytes]", source), read_size=CHUNK_SIZE,
                                                        read_across_frames=True)
    try:
        while out := reader.read(CHUNK_SIZE):
            yield out
    except zstandard.ZstdError as exc:
        raise DamagedStreamError(member, f"is not valid zstd ({exc})", _DAMAGED) from None
    problem, consequence = source.frames.end_problem()
    if problem:
        raise DamagedStreamError(member, problem, consequence)


class _ChunkReader:
    """A file-like ``read`` over an iterable of chunks, showing every byte it hands out to a ``_ZstdFrames``."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._offset = 0
        self.frames = _ZstdFrames()

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk, self._offset = chunk, 0
        if self._offset == 0 and (size < 0 or size >= len(self._chunk)):
            data = self._chunk  # the usual case: the whole chunk, without a copy
        else:
            end = len(self._chunk) if size < 0 else self._offset + size
            data = self._chunk[self._offset:end]
        self._offset += len(data)
        self.frames.feed(data)
        return data


class _ZstdFrames:
    """Follows zstd's frame layout (RFC 8878 §3.1) over the compressed bytes, to tell whether they end between frames.

    Only the lengths are read: the magic number, the frame header's size, each block's 3-byte header
    (last-block flag, type, size) and the optional 4-byte checksum. Everything else, the blocks' content
    and the checksum's value included, is zstandard's to check.
    """

    def __init__(self) -> None:
        self._header = bytearray()  # bytes of the field being read (magic, frame header, block header)
        self._want = 4              # how many bytes that field has
        self._skip = 0              # bytes to pass over before the next field (block content, checksum)
        self._state = "magic"       # magic | skippable | frame header | block | checksum
        self._checksum = False
        self.frames = 0
        self.problem = ""  # data that cannot be zstd frames: the archive is damaged

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.problem:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            take = self._want - len(self._header)
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == self._want:
                self._field_complete()

    def end_problem(self) -> tuple[str, str]:
        """Why the bytes seen so far are not whole zstd frames, and what that means; ("", "") when they are."""
        if self.problem:
            return self.problem, _DAMAGED
        if self._state != "magic" or self._header or self._skip:
            return "ends in the middle of a zstd frame", _TRUNCATED
        if not self.frames:
            return "holds no zstd frame", _TRUNCATED
        return "", ""

    def _next(self, state: str, want: int, skip: int = 0) -> None:
        self._state, self._want, self._skip = state, want, skip
        self._header.clear()

    def _field_complete(self) -> None:
        field = bytes(self._header)
        if self._state == "magic":
            (magic,) = struct.unpack("<I", field)
            if magic == _ZSTD_MAGIC:
                self._next("frame header", 1)
            elif magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
                self._next("skippable", 4)
            else:
                self.problem = "has data that is not a zstd frame after its last frame"
        elif self._state == "skippable":
            self._next("magic", 4, skip=struct.unpack("<I", field)[0])
        elif self._state == "frame header":
            if len(field) == 1:  # the descriptor says how long the rest of the header is
                self._checksum = bool(field[0] & 0x04)
                rest = _frame_header_rest(field[0])
                if rest:
                    self._want = 1 + rest
                    return
            self._next("block", 3)
        elif self._state == "block":
            (header,) = struct.unpack("<I", field + b"\0")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                self.problem = "has a zstd block of a reserved type"
                return
            skip = 1 if kind == 1 else size  # an RLE block stores its one byte; raw and compressed ones `size`
            if not last:
                self._next("block", 3, skip=skip)
            elif self._checksum:
                self._next("checksum", 4, skip=skip)
            else:
                self.frames += 1
                self._next("magic", 4, skip=skip)
        else:  # checksum
            self.frames += 1
            self._next("magic", 4)


def _frame_header_rest(descriptor: int) -> int:
    """Bytes of a zstd frame header after its descriptor byte: window, dictionary id, content size."""
    single_segment = bool(descriptor & 0x20)
    content_size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    return (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03] + content_size_bytes
