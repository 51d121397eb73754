"""Opening a listed file for the archive exactly as it was listed, or saying why not.

Listing and archiving are separate tasks, minutes or hours apart, and the tree belongs to an
application whose users may be hostile. Between the two, a file can vanish, turn into a FIFO,
or be swapped for a symbolic link to a file the backup user can read and they cannot
(``/etc/shadow``); so can any directory above it. The threat: the archive must never hold
anything but the file that was listed. So the opener

* opens the file's directory by path, checks with fstat that it is the directory that was
  listed (same device and inode), and opens the file *relative to that directory* with
  O_NOFOLLOW: a swapped parent or a swapped last component is refused before anything is
  read, and no device or FIFO can be opened through a new link (O_NONBLOCK keeps a FIFO that
  was there from hanging, and opening one has no side effect);
* checks with fstat that what it opened is a regular file with the listed device and inode.

Comparing ``realpath`` with the listing instead would leave a window between the check and the
open; walking every component from ``/`` with O_NOFOLLOW would refuse the links the operator asked
to follow. Directory checks cost one open and fstat per directory, not per file: the listing is
depth-first, so consecutive files share their directory. A file reached through a link that was
followed on purpose (``follow_links``, or an include that is a link) is opened through its link,
and only its inode is compared: following links means trusting whoever can change them.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from typing import BinaryIO

from backup_ops.core.files import FileId, SelectedEntry
from backup_ops.core.models import SkippedFile, printable_name

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
# O_PATH: a handle to look names up in, needing no read permission (an included file may sit in
# a search-only directory) and never opening anything for I/O.
_DIRECTORY_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device node"), (stat.S_ISBLK, "a device node"), (stat.S_ISLNK, "a symbolic link"))


class ListedFileOpener:
    """Opens listed files as listed; holds one verified directory open between calls (``close`` it)."""

    def __init__(self) -> None:
        self._dir_key: tuple[str, FileId | None] | None = None
        self._dir_fd = -1
        self._dir_problem: tuple[str, str] | None = None

    def open(self, entry: SelectedEntry) -> tuple[BinaryIO, os.stat_result] | SkippedFile:
        """The open file and its fstat, or why ``entry`` cannot be archived as listed.

        Raises OSError for failures that are not about the file having changed (I/O errors).
        """
        path = str(entry.path)
        problem = self._directory(os.path.dirname(path), entry.parent_id)
        if problem is not None:
            return _skipped(entry, *problem)
        flags = _READ_FLAGS if entry.via_link else _READ_FLAGS | os.O_NOFOLLOW
        try:
            fd = os.open(os.path.basename(path), flags, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return _skipped(entry, "vanished", "was removed after it was listed")
        except PermissionError:
            return _skipped(entry, "unreadable", f"is not readable by this process (uid {os.geteuid()})")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return _skipped(entry, "replaced", "was replaced by a symbolic link after it was listed")
            if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket cannot be opened
                return _skipped(entry, "replaced", "is no longer a regular file")
            raise
        try:
            st = os.fstat(fd)
        except BaseException:
            _close_quietly(fd)
            raise
        if not stat.S_ISREG(st.st_mode):
            _close_quietly(fd)
            return _skipped(entry, "replaced", f"is now {_kind(st.st_mode)}")
        if entry.file_id is not None and (st.st_dev, st.st_ino) != entry.file_id:
            _close_quietly(fd)
            return _skipped(entry, "replaced", "was replaced by another file after it was listed")
        try:
            return os.fdopen(fd, "rb", buffering=0), st
        except BaseException:
            _close_quietly(fd)
            raise

    def close(self) -> None:
        if self._dir_fd >= 0:
            fd, self._dir_fd = self._dir_fd, -1
            _close_quietly(fd)
        self._dir_key = None

    def _directory(self, path: str, expected: FileId | None) -> tuple[str, str] | None:
        """Hold ``path`` open as the current directory; (reason, detail) when it is not the one listed."""
        key = (path, expected)
        if key == self._dir_key:
            return self._dir_problem
        self.close()
        self._dir_key, self._dir_problem = key, None
        try:
            fd = os.open(path, _DIRECTORY_FLAGS)
        except FileNotFoundError:
            self._dir_problem = ("vanished", "is in a directory that was removed after it was listed")
        except NotADirectoryError:
            self._dir_problem = ("replaced", "is in a directory that was replaced by a file after it was listed")
        except PermissionError:
            self._dir_problem = ("unreadable", f"is in a directory this process (uid {os.geteuid()}) cannot search")
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._dir_problem = ("replaced", "is in a directory that was replaced by a symbolic link loop")
        else:
            self._dir_fd = fd
            st = os.fstat(fd)
            if expected is not None and (st.st_dev, st.st_ino) != expected:
                self._dir_problem = ("replaced", "is in a directory that was replaced after it was listed")
        return self._dir_problem


def _skipped(entry: SelectedEntry, reason: str, detail: str) -> SkippedFile:
    return SkippedFile(printable_name(entry.arcname), reason, detail, printable_name(str(entry.path)))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _close_quietly(fd: int) -> None:
    # A close error is secondary to the error being raised or the skip being recorded.
    with suppress(OSError):
        os.close(fd)
