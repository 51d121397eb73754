"""The archive file as pyzipper writes it: one pass, hashed as it goes, and a full disk named as such.

A write that fails (a full staging disk, a quota) fails every later write with the same
ArchiveError, so however zipfile unwinds (closing the member, writing its data descriptor, the
central directory) the first cause is what the user reads: "No space left on device while
writing archive … to staging directory …".
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from backup_ops.core.errors import ArchiveError
from backup_ops.core.fileio import CHUNK_SIZE


class HashingSink:
    """The archive file as pyzipper sees it: write-only and deliberately not seekable.

    A seekable target makes pyzipper seek back to patch each local header after the member's
    data, so hashing bytes as they pass would hash the wrong file. Without ``seek`` pyzipper
    writes sizes and CRC in data descriptors after each member instead (standard zip, read by
    7-Zip, libzip, Info-ZIP and Python), every byte is written exactly once in order, and the
    sha256 of what passed through is the sha256 of the file: one pass, no re-read.

    Small writes (headers) are buffered here rather than in a BufferedWriter so that a failed
    build can be abandoned without a final flush raising a second error over the first.
    """

    def __init__(self, fd: int, target: Path) -> None:
        self._fd = fd
        self._target = target
        self._sha = hashlib.sha256()
        self._buffer = bytearray()
        self.position = 0
        self.failure: ArchiveError | None = None

    def write(self, data: bytes) -> int:
        self._check()
        size = len(data)
        if self._buffer and len(self._buffer) + size > CHUNK_SIZE:
            self.flush()
        if size >= CHUNK_SIZE:
            self._write_all(data)
        else:
            self._buffer += data
        self._sha.update(data)
        self.position += size
        return size

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self._check()
        if self._buffer:
            self._write_all(self._buffer)
            self._buffer.clear()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def _check(self) -> None:
        if self.failure is not None:
            raise ArchiveError(str(self.failure))

    def _write_all(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.failure = write_error(exc, self._target)
            raise self.failure from exc
        finally:
            # The traceback keeps this frame alive; a view still exporting the buffer would make the
            # next resize fail with "Existing exports of data: object cannot be re-sized".
            view.release()


def write_error(exc: OSError, target: Path) -> ArchiveError:
    """The one sentence for a failed write of ``target``; a full disk or quota names the staging directory."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArchiveError(
            f"No space left on device while writing archive {target} to staging directory {target.parent}: "
            "free space or point backup.staging_directory elsewhere."
        )
    return ArchiveError(f"Could not write archive {target}: {exc.strerror or exc}.")
