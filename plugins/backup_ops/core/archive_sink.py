"""The archive file as pyzipper writes it: one pass, hashed as it goes, and a full disk named as such.

A write that fails (a full staging disk, a quota) fails every later write with the same
ArchiveError, so however zipfile unwinds (closing the member, writing its data descriptor, the
central directory) the first cause is what the user reads: "No space left on device while
writing archive … to staging directory …".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from backup_ops.core.errors import ArchiveError
from backup_ops.core.fileio import MEMBER_PIECE
from backup_ops.core.hashed_writer import HashedWriter


class HashingSink:
    """The archive file as pyzipper sees it: write-only and deliberately not seekable.

    A seekable target makes pyzipper seek back to patch each local header after the member's
    data, so hashing bytes as they pass would hash the wrong file. Without ``seek`` pyzipper
    writes sizes and CRC in data descriptors after each member instead (standard zip, read by
    7-Zip, libzip, Info-ZIP and Python), every byte is written exactly once in order, and the
    sha256 of what passed through is the sha256 of the file: one pass, no re-read.

    The hashing and writing run on a ``HashedWriter`` thread while pyzipper encrypts the next
    piece. Small writes (headers) are gathered here into pieces of up to 256 KiB. ``flush`` waits
    until everything is written; ``close`` stops the thread (call it however the build ends).
    """

    def __init__(self, fd: int, target: Path) -> None:
        self._fd = fd
        self._target = target
        self._buffer = bytearray()
        self._writer = HashedWriter(self._write_all, name="archive-writer")
        self.position = 0

    @property
    def failure(self) -> ArchiveError | None:
        """The write error that stopped the writing (a full disk), as the ArchiveError users read."""
        failure = self._writer.failure
        return failure if isinstance(failure, ArchiveError) else None

    def write(self, data: bytes) -> int:
        self._check()
        size = len(data)
        if self._buffer and len(self._buffer) + size > MEMBER_PIECE:
            self._send_buffer()
        if size >= MEMBER_PIECE:
            # Queued as is: pyzipper hands over what its compressor or our cipher made (a new buffer each
            # time, never written to again); anything else is copied first.
            self._writer.put(data if type(data) in (bytes, bytearray) else bytes(data))
        else:
            self._buffer += data
        self.position += size
        return size

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self._check()
        self._send_buffer()
        self._writer.drain()

    def close(self) -> None:
        self._writer.close()

    def hexdigest(self) -> str:
        return self._writer.digest.hexdigest()

    def _send_buffer(self) -> None:
        if self._buffer:
            self._writer.put(bytes(self._buffer))
            self._buffer.clear()

    def _check(self) -> None:
        if self._writer.failure is not None:
            raise ArchiveError(str(self._writer.failure))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise write_error(exc, self._target) from exc
        finally:
            view.release()


def write_error(exc: OSError, target: Path) -> ArchiveError:
    """The one sentence for a failed write of ``target``; a full disk or quota names the staging directory."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArchiveError(
            f"No space left on device while writing archive {target} to staging directory {target.parent}: "
            "free space or point backup.staging_directory elsewhere."
        )
    return ArchiveError(f"Could not write archive {target}: {exc.strerror or exc}.")
