"""Dump compression: every engine round-trips, writes standard files other tools read, and damage is one sentence."""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterable

import pytest
import zstandard

from backup_ops.core.compression import (
    IN_PROCESS_METHODS,
    DamagedStreamError,
    compressor_for,
    decompress_chunks,
    engine,
    zstd_threads,
)
from backup_ops.core.config.model import Compression
from backup_ops.core.errors import ArchiveError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE


def sample_sql(rows: int) -> bytes:
    """Plain-dump-like SQL: a header, one COPY block of tab-separated rows, pg_dump's trailer."""
    rng = random.Random(rows)
    lines = [b"--\n-- PostgreSQL database dump\n--\n\nCOPY public.invoices (id, customer, issued, total) FROM stdin;\n"]
    lines += [b"%d\tcustomer %d\t2026-%02d-%02d\t%d.%02d\n" % (i, rng.randrange(5000), rng.randint(1, 12),
                                                               rng.randint(1, 28), rng.randrange(10**5), i % 100)
              for i in range(rows)]
    lines.append(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n")
    return b"".join(lines)


SQL = sample_sql(60_000)  # ~2 MB: several CHUNK_SIZE pieces
SMALL_SQL = sample_sql(8_000)  # for the slow levels


def pieces(data: bytes, size: int = CHUNK_SIZE) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def compress(compression: Compression, data: bytes, size: int = CHUNK_SIZE) -> bytes:
    compressor = compressor_for(compression)
    assert compressor is not None
    return b"".join(compressor.compress(piece) for piece in pieces(data, size)) + compressor.flush()


def decompress(method: str, data: bytes | Iterable[bytes], size: int = CHUNK_SIZE) -> bytes:
    chunks = pieces(data, size) if isinstance(data, bytes) else data
    return b"".join(decompress_chunks(chunks, method, "db-dumps/postgresql-app.sql.x"))


ENGINES = [
    (Compression("gzip", 1), "gzip level 1 (ISA-L)"),
    (Compression("gzip", 3), "gzip level 3 (ISA-L)"),
    (Compression("gzip", 4), "gzip level 4 (zlib)"),
    (Compression("gzip", 6), "gzip level 6 (zlib)"),
    (Compression("gzip", 9), "gzip level 9 (zlib)"),
    (Compression("zstd", 1), None),
    (Compression("zstd", 3), None),
    (Compression("zstd", 19), None),
]


# ---------------------------------------------------------------------------- compressing


@pytest.mark.parametrize(("compression", "description"), ENGINES, ids=[str(c) for c, _ in ENGINES])
def test_every_engine_round_trips_and_says_what_it_is(compression: Compression, description: str | None) -> None:
    data = SMALL_SQL if compression.level >= 9 else SQL
    packed = compress(compression, data)
    assert len(packed) < len(data) / 2
    assert decompress(compression.method, packed) == data
    assert decompress(compression.method, packed, size=4099) == data  # headers and blocks split across chunks
    threads = zstd_threads(compression.level)
    assert engine(compression) == (description or f"zstd level {compression.level} (zstandard, {threads} "
                                                  f"thread{'s' if threads > 1 else ''})")


def test_the_default_is_isal_gzip_level_3() -> None:
    assert Compression() == Compression("gzip", 3) and engine(Compression()) == "gzip level 3 (ISA-L)"


@pytest.mark.parametrize("compression", [Compression("none", 0), Compression("lz4", 1)], ids=str)
def test_none_and_lz4_are_not_compressed_in_process(compression: Compression) -> None:
    assert compressor_for(compression) is None
    assert engine(compression) in ("no compression", "lz4 level 1 (pg_dump)")


def test_zstd_gets_a_worker_per_cpu_that_its_level_has_memory_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    workers = [zstd_threads(level) for level in range(1, 23)]
    assert max(workers) <= 8 and min(workers) == 1
    assert workers == sorted(workers, reverse=True)  # more memory per worker at each level: never more workers
    assert (zstd_threads(3), zstd_threads(9), zstd_threads(19)) == (5, 2, 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert (zstd_threads(1), zstd_threads(3), zstd_threads(19)) == (2, 2, 1)


def test_zstd_bytes_do_not_depend_on_the_number_of_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    data = sample_sql(400_000)  # ~14 MB: several 4 MiB jobs
    outputs = set()
    for cpus in (1, 2, 8):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        outputs.add(compress(Compression("zstd", 3), data))
    assert len(outputs) == 1
    assert decompress("zstd", outputs.pop()) == data


@pytest.mark.parametrize("compression", [Compression("gzip", 3), Compression("gzip", 6), Compression("zstd", 3)],
                         ids=str)
def test_equal_input_gives_equal_bytes(compression: Compression) -> None:
    assert compress(compression, SQL) == compress(compression, SQL)


@pytest.mark.parametrize("level", [1, 3, 6, 9])
def test_gzip_output_is_one_plain_member_without_time_or_name(level: int) -> None:
    packed = compress(Compression("gzip", level), SMALL_SQL)
    magic, method, flags, mtime = struct.unpack("<HBBI", packed[:8])
    assert (magic, method, flags, mtime) == (0x8B1F, 8, 0, 0)  # gzip, deflate, no FNAME/FEXTRA, mtime 0
    assert gzip.decompress(packed) == SMALL_SQL  # Python's gzip module
    assert subprocess.run(["gzip", "-dc"], input=packed, capture_output=True, check=True).stdout == SMALL_SQL


def test_zstd_output_is_a_standard_frame_with_a_checksum() -> None:
    packed = compress(Compression("zstd", 3), SQL)
    assert zstandard.get_frame_parameters(packed).has_checksum
    assert zstandard.ZstdDecompressor().stream_reader(packed).read() == SQL
    zstd = shutil.which("zstd")
    if zstd is None:
        pytest.fail("The zstd command is not on PATH: run `make test`, which installs the zstd package; the runbook "
                    "restores .sql.zst dumps with it.")
    assert subprocess.run([zstd, "-dc"], input=packed, capture_output=True, check=True).stdout == SQL


# ---------------------------------------------------------------------------- decompressing what others wrote


def test_gzip_members_one_after_another_are_one_stream() -> None:
    first, second = SQL[:700_000], SQL[700_000:]
    joined = compress(Compression("gzip", 3), first) + compress(Compression("gzip", 6), second) + gzip.compress(b"")
    assert decompress("gzip", joined) == SQL
    assert decompress("gzip", joined, size=1000) == SQL


def test_files_written_by_gnu_gzip_and_the_zstd_command_decompress() -> None:
    by_gzip = subprocess.run(["gzip", "-n", "-c"], input=SMALL_SQL, capture_output=True, check=True).stdout
    assert decompress("gzip", by_gzip, size=999) == SMALL_SQL
    zstd = shutil.which("zstd") or pytest.fail("The zstd command is not on PATH: run `make test`.")
    for argv in ([zstd, "-q", "-c", "-3"], [zstd, "-q", "-c", "-1", "--no-check"]):
        packed = subprocess.run(argv, input=SQL, capture_output=True, check=True).stdout
        assert decompress("zstd", packed, size=999) == SQL


@pytest.mark.parametrize("data", [b"", b"tiny", SMALL_SQL[:1000], SMALL_SQL], ids=["empty", "tiny", "1kB", "300kB"])
@pytest.mark.parametrize("checksum", [True, False], ids=["checksum", "no-checksum"])
def test_zstd_header_forms_are_followed_to_their_end(data: bytes, checksum: bool) -> None:
    # One-shot compression writes the content size: 0-, 1-, 2- or 4-byte fields, single-segment frames.
    frame = zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data)
    assert decompress("zstd", frame, size=5) == data
    assert decompress("zstd", frame + frame) == data * 2  # frames one after another


def test_zstd_raw_rle_and_skippable_frames_decompress() -> None:
    noise = random.Random(7).randbytes(300_000)  # incompressible: raw blocks
    zeros = bytes(400_000)                        # RLE or tiny compressed blocks
    skippable = struct.pack("<II", 0x184D2A5E, 5) + b"notes"
    packed = skippable + compress(Compression("zstd", 3), noise) + compress(Compression("zstd", 1), zeros)
    assert decompress("zstd", packed, size=3) == noise + zeros


def test_uncompressed_dumps_pass_through() -> None:
    assert decompress("none", [b"", b"abc", b"", b"def"]) == b"abcdef"
    assert "none" in IN_PROCESS_METHODS and "lz4" not in IN_PROCESS_METHODS


def test_a_method_that_needs_a_tool_is_refused_for_good() -> None:
    with pytest.raises(ArchiveError, match=r"compressed with 'lz4', which backup-ops cannot decompress") as refused:
        decompress("lz4", [b"\x04\x22\x4d\x18"])
    assert refused.value.retryable is False


# ---------------------------------------------------------------------------- damage and bombs


ONE_SENTENCE = re.compile(r"^Dump 'db-dumps/postgresql-app\.sql\.x' [^.]*(\([^)]*\))?[^.]*: "
                          r"(the archive is damaged|it is truncated)\.$")


def assert_damaged(method: str, data: bytes, expected: str, size: int = CHUNK_SIZE) -> None:
    with pytest.raises(DamagedStreamError) as raised:
        decompress(method, data, size)
    message = str(raised.value)
    assert isinstance(raised.value, VerificationError)
    assert ONE_SENTENCE.match(message), message
    assert expected in message and raised.value.problem in message


GZ = compress(Compression("gzip", 3), SQL)
ZST = compress(Compression("zstd", 3), SQL)


@pytest.mark.parametrize("cut", [5, 100, len(GZ) // 2, len(GZ) - 8, len(GZ) - 1])
def test_truncated_gzip_is_one_sentence(cut: int) -> None:
    assert_damaged("gzip", GZ[:cut], "ends in the middle of its gzip stream: it is truncated")


@pytest.mark.parametrize(("where", "expected"), [
    (lambda data: len(data) - 6, "is not valid gzip"),  # the CRC-32 of the trailer
    (lambda data: len(data) - 2, "is not valid gzip"),  # the size of the trailer
    (lambda data: 2, "is not valid gzip"),              # the compression method
], ids=["crc", "size", "header"])
def test_corrupt_gzip_is_one_sentence(where, expected: str) -> None:
    data = bytearray(GZ)
    data[where(GZ)] ^= 0x55
    assert_damaged("gzip", bytes(data), expected)


def test_gzip_followed_by_junk_is_damaged_or_truncated() -> None:
    with pytest.raises(DamagedStreamError):
        decompress("gzip", GZ + b"\x00junk after the member")


@pytest.mark.parametrize("cut", [0, 3, 4, 6, 12, len(ZST) // 2, len(ZST) - 4, len(ZST) - 1])
def test_truncated_zstd_is_one_sentence(cut: int) -> None:
    expected = "holds no zstd frame" if cut == 0 else "ends in the middle of a zstd frame"
    assert_damaged("zstd", ZST[:cut], f"{expected}: it is truncated", size=1000)


def test_corrupt_zstd_is_one_sentence() -> None:
    checksum = bytearray(ZST)
    checksum[-1] ^= 0x01  # the content checksum: zstandard compares it with the decompressed data
    assert_damaged("zstd", bytes(checksum), "is not valid zstd (")
    assert_damaged("zstd", ZST + b"junk", "the archive is damaged")
    reserved = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=False).compress(b"a" * 10))
    reserved[6] |= 0x06  # the first block's type bits: 3 is reserved (header: magic 4 + descriptor 1 + window 1)
    assert_damaged("zstd", bytes(reserved), "the archive is damaged")


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """100 MB of zeros as gzip and as zstd: a few hundred KB that inflate to 100 MB."""
    zeros = bytes(100 << 20)
    return {"gzip": zlib.compress(zeros, 1, wbits=31), "zstd": zstandard.ZstdCompressor(level=1).compress(zeros)}


@pytest.mark.parametrize("method", ["gzip", "zstd"])
@pytest.mark.parametrize("input_size", [CHUNK_SIZE, 1 << 30], ids=["1MiB-chunks", "one-piece"])
def test_a_100_mb_bomb_comes_out_one_chunk_at_a_time(bombs: dict[str, bytes], method: str, input_size: int) -> None:
    bomb = bombs[method]
    assert len(bomb) < 500_000
    total = steps = 0
    for out in decompress_chunks(pieces(bomb, input_size), method, "bomb"):
        assert 0 < len(out) <= CHUNK_SIZE
        assert out.count(0) == len(out)
        total += len(out)
        steps += 1
    assert total == 100 << 20 and steps >= 100
