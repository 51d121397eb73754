"""Read-back: prove a staged dump is complete and decodable before it goes into the archive, and count its rows.

Completion: plain SQL that streams through this process (uncompressed, or compressed here with gzip
or zstd) must end with pg_dump's "dump complete" trailer, checked on the bytes as they streamed
through (the file's sha256, taken while writing, is checked when the archive is verified). lz4 SQL,
which pg_dump compresses itself, is decompressed from disk for the same check, through the ``lz4``
Python module or else the ``lz4`` command-line tool. Custom archives are read whole:
``pg_restore --data-only`` writes every data block's rows (which reads and decompresses each of
them) into ``core.copy_rows``'s counter, and the blocks read must be the table-of-contents' TABLE
DATA entries (``pg_restore --list``), one each.

Rows. Plain output is counted as it streams (``dump``); a dump that pg_dump compressed itself
(custom format, lz4) is counted here, on the data this read-back decompresses anyway, so
``verify_readback`` returns its COPY blocks (None: counted on the stream).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

from backup_ops.adapters.postgres.tools import clean_env, read_tail
from backup_ops.core.copy_rows import CopyBlock, CopyRowCounter, CopyStreamError
from backup_ops.core.errors import DumpError
from backup_ops.core.fileio import CHUNK_SIZE

CheckKind = Literal["stream", "lz4", "custom"]
"""How a dump is proved complete and counted: on the stream (plain SQL through this process), or read back
from disk (lz4 SQL that pg_dump compressed, a custom-format archive)."""

TAIL_BYTES = 64 * 1024
"""How many of the last bytes of a plain dump the completion check looks at."""

_TRAILER = b"-- PostgreSQL database dump complete"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"


def verify_readback(path: Path, check: CheckKind, pg_restore: Path | None, streamed_tail: bytes, *, who: str,
                    log: logging.Logger) -> list[CopyBlock] | None:
    """Prove the staged dump is complete and decodable; raises DumpError naming what is wrong.

    Returns the dump's COPY blocks with their rows when they were counted here (files pg_dump
    compressed itself); None when the stream was counted as it was written (plain SQL, gzip).

    Plain dumps that this process compressed are checked on the bytes pg_dump produced, as they
    streamed through (``streamed_tail``): decompressing the file again would only re-test zlib
    (~8 % of a backup's time), while the file's own bytes are covered by the sha256 taken as it
    was written and checked when the archive is verified. Files pg_dump compressed
    itself (custom format, lz4) are read back from disk.
    """

    def fail(reason: str) -> DumpError:
        return unreadable(who, reason)

    if check == "stream":
        _check_trailer(streamed_tail, fail)
        return None
    if check == "custom":
        if pg_restore is None:
            raise fail("no pg_restore to check the custom-format archive with")
        return _read_custom_archive(path, pg_restore, fail)
    with path.open("rb") as handle:
        if handle.read(4) != _LZ4_MAGIC:
            raise fail(f"the file does not start with the {check} magic number")
    counter = CopyRowCounter()
    tail = _decompressed_tail(path, check, fail, counter)
    if tail is None:
        raise fail(f"neither the {check} Python module nor the {check} command is on this worker, so its rows "
                   f"cannot be counted; install the {check} command, or use gzip")
    _check_trailer(tail, fail)
    return _blocks(counter, fail)


def unreadable(who: str, reason: str) -> DumpError:
    """The error for a staged dump that is not complete or does not decode."""
    return DumpError(f"The dump of {who} does not read back: {reason}. The staged file was deleted; run the "
                     "backup again and check the staging disk and pg_dump if it keeps failing.")


def _blocks(counter: CopyRowCounter, fail: Callable[[str], DumpError]) -> list[CopyBlock]:
    try:
        return counter.finish()
    except CopyStreamError as exc:
        raise fail(str(exc)) from None


def _decompressed_tail(path: Path, kind: CheckKind, fail: Callable[[str], DumpError],
                       counter: CopyRowCounter) -> bytes | None:
    """The last bytes of an lz4 dump, decompressing (and counting) all of it; None: no decompressor exists."""
    tail = b""

    def keep(data: bytes) -> None:
        nonlocal tail
        tail = data[-TAIL_BYTES:] if len(data) >= TAIL_BYTES else (tail + data)[-TAIL_BYTES:]
        try:
            counter.feed(data)
        except CopyStreamError as exc:
            raise fail(str(exc)) from None

    stream = _open_lz4(path)
    if stream is not None:
        try:
            with stream:
                while chunk := stream.read(CHUNK_SIZE):
                    keep(chunk)
        except Exception as exc:  # each library raises its own error types
            raise fail(f"{kind} data is corrupt ({exc})") from exc
        return tail
    tool = shutil.which(kind)
    if tool is None:
        return None
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([tool, "-d", "-c", "-q", str(path)], stdout=subprocess.PIPE, stderr=errors,
                                stdin=subprocess.DEVNULL)
        if proc.stdout is not None:
            with proc.stdout:
                while chunk := proc.stdout.read(CHUNK_SIZE):
                    keep(chunk)
        if proc.wait() != 0:
            raise fail(f"{kind} -d failed: {read_tail(errors, 500).strip()}")
    return tail


def _open_lz4(path: Path) -> IO[bytes] | None:
    """A streaming reader from the lz4 Python module, or None when it is not installed."""
    try:
        import lz4.frame

        frame_reader: IO[bytes] = lz4.frame.open(path, "rb")
        return frame_reader
    except ImportError:
        return None


def _check_trailer(tail: bytes, fail: Callable[[str], DumpError]) -> None:
    """pg_dump ends plain output with its "dump complete" comment, then only comments and ``\\unrestrict``."""
    position = tail.rfind(_TRAILER)
    if position < 0:
        raise fail("it does not end with pg_dump's '-- PostgreSQL database dump complete' line, so it is truncated")
    for line in tail[position + len(_TRAILER):].splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith((b"--", b"\\unrestrict")):
            raise fail(f"unexpected content after the 'dump complete' line: {stripped[:80]!r}")


def _read_custom_archive(path: Path, pg_restore: Path, fail: Callable[[str], DumpError]) -> list[CopyBlock]:
    """Every data block of a custom-format archive, read and counted; they must be its TOC's TABLE DATA entries."""
    env = clean_env()
    listing = subprocess.run([str(pg_restore), "--list", str(path)], capture_output=True, env=env, check=False,
                             stdin=subprocess.DEVNULL)
    if listing.returncode != 0:
        raise fail(f"pg_restore --list failed: {listing.stderr.decode(errors='replace').strip()[-500:]}")
    entries = [line for line in listing.stdout.decode("utf-8", errors="replace").splitlines()
               if not line.startswith(";") and " TABLE DATA " in line]
    counter = CopyRowCounter()
    with tempfile.TemporaryFile() as errors:
        # --data-only to standard output: pg_restore reads and decompresses every data block, and its rows
        # pass through the counter; nothing touches a database.
        proc = subprocess.Popen([str(pg_restore), "--data-only", "--file=-", str(path)], stdout=subprocess.PIPE,
                                stderr=errors, env=env, stdin=subprocess.DEVNULL)
        try:
            if proc.stdout is not None:
                with proc.stdout:
                    while chunk := proc.stdout.read(CHUNK_SIZE):
                        counter.feed(chunk)
        except CopyStreamError as exc:
            proc.kill()
            proc.wait()
            raise fail(str(exc)) from None
        if proc.wait() != 0:
            raise fail(f"pg_restore could not read every data block: {read_tail(errors, 500).strip()}")
    blocks = _blocks(counter, fail)
    if len(blocks) != len(entries):
        raise fail(f"its table of contents lists {len(entries)} TABLE DATA entries, but pg_restore wrote "
                   f"{len(blocks)} tables' data")
    return blocks
