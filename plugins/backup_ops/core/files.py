"""Which files go into a backup: laravel-backup's ``source.files`` semantics, streamed.

``select_files`` walks the configured includes depth-first in sorted order and yields one
``SelectedEntry`` per regular file or directory, and one ``SkippedFile`` per file it cannot back
up, never holding more than the listings of the directories on the current path, so a tree of
millions of files costs no more memory than a small one. Each entry carries the device and
inode of the file and of its directory, so the archive can open exactly what was listed.

Decisions beyond laravel-backup, each because a silent surprise in a backup is worse than a
loud one:

* An include outside ``relative_path`` raises FileSelectionError before anything is yielded.
  laravel-backup falls back to the absolute path, which can give two different files the same
  member name and drop one of them.
* An include path itself is followed even when it is a symbolic link (the operator named it),
  like Symfony Finder's ``in()``; ``follow_links`` governs links found while walking.
* Every file that cannot be backed up is yielded as a ``SkippedFile`` with its reason, so the
  manifest records it: FIFOs, sockets and device nodes, names restore would refuse (not valid
  UTF-8, backslash traversal such as ``..\\x``), unreadable files, and (with
  ``ignore_unreadable_directories``) unreadable directories. Reasons listed in
  ``source.files.fail_on`` (by default: unreadable files) raise FileSelectionError once the
  walk is done, naming the first such files. An unreadable directory fails at once unless
  ``ignore_unreadable_directories`` is set.
* Overlapping includes (``/srv/app`` and ``/srv/app/storage``) are each walked once: a walk
  skips any path that is itself an include, and each include is handled once, in config order.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_ops.core.config import FileSource
from backup_ops.core.errors import FileSelectionError
from backup_ops.core.manifest import member_name_problem
from backup_ops.core.models import SkippedFile, printable_name
from backup_ops.core.skips import SkipTally

FileId = tuple[int, int]
"""(st_dev, st_ino): which file a name pointed at when it was listed."""

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SelectedEntry:
    """A regular file or directory to archive, under its member name (posix, no leading or trailing '/').

    ``file_id`` is the file's and ``parent_id`` its directory's (device, inode) when listed;
    ``via_link`` says the last component of ``path`` is a symbolic link that was followed on
    purpose (``follow_links``, or an include that is a link). None for listings written
    before identities were recorded.
    """

    path: Path
    arcname: str
    is_dir: bool
    size: int
    mtime: float = 0.0
    mode: int = 0
    file_id: FileId | None = None
    parent_id: FileId | None = None
    via_link: bool = False

    @property
    def member_name(self) -> str:
        """The zip member name: ``arcname``, with a trailing '/' for directories."""
        return self.arcname + "/" if self.is_dir else self.arcname

    def to_dict(self) -> dict[str, Any]:
        """One line of the run's file listing (JSON-able)."""
        return {"path": str(self.path), "arcname": self.arcname, "is_dir": self.is_dir, "size": self.size,
                "mtime": self.mtime, "mode": self.mode, "file_id": self.file_id, "parent_id": self.parent_id,
                "via_link": self.via_link}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectedEntry:
        return cls(Path(data["path"]), data["arcname"], data["is_dir"], data["size"], data["mtime"], data["mode"],
                   file_id=_file_id(data.get("file_id")), parent_id=_file_id(data.get("parent_id")),
                   via_link=bool(data.get("via_link", False)))


def _file_id(value: Any) -> FileId | None:
    return None if value is None else (int(value[0]), int(value[1]))


def select_files(
    source: FileSource,
    always_exclude: Sequence[Path] = (),
    log: logging.Logger | None = None,
) -> Iterator[SelectedEntry | SkippedFile]:
    """Yield the files and directories ``source`` selects, and the files it skips, depth-first in sorted order.

    ``always_exclude`` (the staging directory, local destinations) applies even to included
    files, so a backup never contains itself. Raises FileSelectionError for an include outside
    ``relative_path``, for an unreadable directory (unless ignored), and, after the walk, for
    skips whose reason is in ``source.fail_on`` (see the module docstring).
    """
    yield from _Selection(source, always_exclude, log or _LOG).entries()


class _Selection:
    """The state of one walk: resolved excludes, include bookkeeping, loop protection and the skips."""

    def __init__(self, source: FileSource, always_exclude: Sequence[Path], log: logging.Logger) -> None:
        self.log = log
        self.follow_links = source.follow_links
        self.ignore_unreadable = source.ignore_unreadable_directories
        self.relative = _normalize(source.relative_path) if source.relative_path is not None else None
        self.includes = list(dict.fromkeys(_normalize(p) for p in source.include))
        self.include_set = set(self.includes)
        self.always_excluded = {os.path.realpath(p) for p in always_exclude}
        self.excluded = self.always_excluded | _expand_excludes(source.exclude)
        # (st_dev, st_ino) of directories walked so far: only needed, and only kept, when
        # following links, where a link to an ancestor would otherwise loop forever.
        self.visited: set[FileId] = set()
        self.counts = {"files": 0, "bytes": 0, "directories": 0, "links": 0, "missing": 0}
        self.skips = SkipTally(source.fail_on, log)

    # -- top level

    def entries(self) -> Iterator[SelectedEntry | SkippedFile]:
        for include in self.includes:
            self.arcname(include)  # fail before yielding anything when an include is outside relative_path
        for include in self.includes:
            yield from self.include(include)
        c = self.counts
        self.log.info(
            "Selected %d files (%d bytes) and %d directories; skipped %d symbolic links and %d missing includes; "
            "%s.", c["files"], c["bytes"], c["directories"], c["links"], c["missing"], self.skips.summary(),
        )
        failure = self.skips.failure()
        if failure is not None:
            raise failure

    def include(self, path: str) -> Iterator[SelectedEntry | SkippedFile]:
        try:
            st = os.stat(path)  # follows: an include that is a link means its target
        except FileNotFoundError:
            self.counts["missing"] += 1
            self.log.warning("Include path %s does not exist, skipping.", path)
            return
        except PermissionError as exc:
            yield from _some(self.unreadable_directory(os.path.dirname(path), exc))  # an ancestor is not searchable
            return
        except OSError as exc:
            raise FileSelectionError(f"Include path {path} cannot be read: {exc.strerror}.") from exc
        real = os.path.realpath(path)
        if stat.S_ISREG(st.st_mode):
            # laravel-backup yields an included file as-is; only the always-excluded paths apply.
            if _within(real, self.always_excluded):
                self.log.info("Include path %s is inside the staging directory or a destination, skipping.", path)
                return
            parent = os.stat(os.path.dirname(path))
            yield from _some(self.file_entry(path, st, (parent.st_dev, parent.st_ino), os.path.islink(path)))
        elif stat.S_ISDIR(st.st_mode):
            if _within(real, self.excluded):
                self.log.info("Include path %s is excluded, skipping.", path)
                return
            yield from self.walk(path, real, st)
        else:
            yield self.special(path, st)

    # -- the walk

    def walk(self, root: str, root_real: str, root_st: os.stat_result) -> Iterator[SelectedEntry | SkippedFile]:
        listing = self.listing(root)
        if not isinstance(listing, list):
            yield from _some(listing)
            return
        if self.follow_links:
            self.visited.add((root_st.st_dev, root_st.st_ino))
        if self.arcname(root):  # the relative_path root itself has no member of its own
            entry = self.dir_entry(root, root_st)
            yield entry
            if isinstance(entry, SkippedFile):
                return
        # An explicit stack, not recursion: trees can be deeper than Python's recursion limit.
        stack: list[tuple[str, str, FileId, Iterator[os.DirEntry[str]]]] = [
            (root, root_real, (root_st.st_dev, root_st.st_ino), iter(listing))]
        while stack:
            parent, parent_real, parent_id, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            path = os.path.join(parent, child.name)
            if path in self.include_set:
                continue  # walked as its own include, exactly once
            found = self.inspect(path, child, os.path.join(parent_real, child.name))
            if not isinstance(found, tuple):
                yield from _some(found)
                continue
            st, real, is_link = found
            if stat.S_ISDIR(st.st_mode):
                sub_listing = self.listing(path)
                if not isinstance(sub_listing, list):
                    yield from _some(sub_listing)
                    continue
                entry = self.dir_entry(path, st)
                yield entry
                if isinstance(entry, SkippedFile):
                    continue
                if self.follow_links:
                    self.visited.add((st.st_dev, st.st_ino))
                stack.append((path, real, (st.st_dev, st.st_ino), iter(sub_listing)))
            elif stat.S_ISREG(st.st_mode):
                yield from _some(self.file_entry(path, st, parent_id, is_link))
            else:
                yield self.special(path, st)

    def inspect(self, path: str, child: os.DirEntry[str], real: str
                ) -> tuple[os.stat_result, str, bool] | SkippedFile | None:
        """The stat, real path and is-a-link of ``child``; a SkippedFile or None when it is skipped."""
        try:
            is_link = child.is_symlink()
            if not is_link:
                # Not a link, so its real path is its parent's real path plus its name; no
                # per-file realpath() calls, and only equality with an exclude needs checking
                # because the parent already passed the "below an excluded directory" test.
                if real in self.excluded:
                    return None
                return child.stat(follow_symlinks=False), real, False
            if not self.follow_links:
                self.counts["links"] += 1
                self.log.info("Skipping symbolic link %s (source.files.follow_links is false).", path)
                return None
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self.counts["links"] += 1
                self.log.warning("Skipping broken symbolic link %s.", path)
                return None
            real = os.path.realpath(path)
            if _within(real, self.excluded):
                return None
            # Only links are checked against visited directories: a real directory is always
            # walked (it is the canonical place of its files), a link to one already walked,
            # or to an ancestor (a loop), is not.
            if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) in self.visited:
                self.counts["links"] += 1
                self.log.info("Skipping symbolic link %s: its target %s is already being backed up (link loop).",
                              path, real)
                return None
            return st, real, True
        except FileNotFoundError:
            return self.skip(path, "vanished", "was removed while the files were being listed")
        except PermissionError as exc:
            return self.unreadable_directory(os.path.dirname(path), exc)
        except OSError as exc:
            raise FileSelectionError(f"Cannot inspect {path}: {exc.strerror}.") from exc

    def listing(self, path: str) -> list[os.DirEntry[str]] | SkippedFile | None:
        """The sorted entries of directory ``path``; a SkippedFile or None when it is skipped."""
        try:
            # scandir needs read permission, stat of the entries needs search (x) permission.
            if not os.access(path, os.R_OK | os.X_OK, effective_ids=True):
                raise PermissionError(13, "Permission denied", path)
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except PermissionError as exc:
            return self.unreadable_directory(path, exc)
        except FileNotFoundError:
            return self.skip(path, "vanished", "was removed while the files were being listed", is_dir=True)
        except NotADirectoryError:
            return self.skip(path, "replaced", "was replaced by a file while the files were being listed")
        except OSError as exc:
            raise FileSelectionError(f"Directory {path} cannot be listed: {exc.strerror}.") from exc

    # -- entries

    def file_entry(self, path: str, st: os.stat_result, parent_id: FileId, via_link: bool
                   ) -> SelectedEntry | SkippedFile:
        if not os.access(path, os.R_OK, effective_ids=True):
            return self.skip(path, "unreadable", f"is not readable by this process (uid {os.geteuid()})")
        arcname = self.named(path, is_dir=False)
        if isinstance(arcname, SkippedFile):
            return arcname
        self.counts["files"] += 1
        self.counts["bytes"] += st.st_size
        return SelectedEntry(Path(path), arcname, False, st.st_size, st.st_mtime, stat.S_IMODE(st.st_mode),
                             file_id=(st.st_dev, st.st_ino), parent_id=parent_id, via_link=via_link)

    def dir_entry(self, path: str, st: os.stat_result) -> SelectedEntry | SkippedFile:
        arcname = self.named(path, is_dir=True)
        if isinstance(arcname, SkippedFile):
            return arcname
        self.counts["directories"] += 1
        return SelectedEntry(Path(path), arcname, True, 0, st.st_mtime, stat.S_IMODE(st.st_mode),
                             file_id=(st.st_dev, st.st_ino))

    def named(self, path: str, *, is_dir: bool) -> str | SkippedFile:
        """The member name for ``path``, or a bad_name SkippedFile when restore would refuse it."""
        arcname = self.arcname(path)
        problem = member_name_problem(arcname)
        if problem:
            below = "; nothing below it was backed up" if is_dir else ""
            return self.skip(path, "bad_name", f"has {problem}, which restore refuses{below}", is_dir=is_dir)
        return arcname

    def arcname(self, path: str) -> str:
        if self.relative is None:
            return path.lstrip("/")
        if path == self.relative:
            return ""
        prefix = self.relative.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise FileSelectionError(
                f"Include path {path} is outside source.files.relative_path {self.relative}; move relative_path "
                "up to a directory that contains every include, or remove relative_path to store absolute paths."
            )
        return path[len(prefix):]

    def skip(self, path: str, reason: str, detail: str, *, is_dir: bool = False) -> SkippedFile:
        """Record (log and count) that ``path`` is not backed up, and why."""
        arcname = printable_name(self.arcname(path)) or "."
        skipped = SkippedFile(arcname + "/" if is_dir else arcname, reason, detail, printable_name(path))
        self.skips.add(skipped)
        return skipped

    def unreadable_directory(self, path: str, exc: OSError) -> SkippedFile:
        """Skip and record an unreadable directory when they are ignored; otherwise fail at once."""
        if not self.ignore_unreadable:
            raise FileSelectionError(
                f"Directory {path} is not readable by this process (uid {os.geteuid()}): fix its permissions or "
                "set source.files.ignore_unreadable_directories: true to skip unreadable directories."
            ) from exc
        return self.skip(path, "unreadable_directory", f"is a directory this process (uid {os.geteuid()}) cannot "
                         "read; nothing below it was backed up", is_dir=True)

    def special(self, path: str, st: os.stat_result) -> SkippedFile:
        if stat.S_ISFIFO(st.st_mode):
            return self.skip(path, "fifo", "is a FIFO")
        if stat.S_ISSOCK(st.st_mode):
            return self.skip(path, "socket", "is a socket")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return self.skip(path, "device", "is a device node")
        return self.skip(path, "device", "is a special file, neither regular file nor directory")


def _some(item: SelectedEntry | SkippedFile | None) -> Iterator[SelectedEntry | SkippedFile]:
    """Yield ``item`` unless it is None (a silent skip: excluded, a link not followed)."""
    if item is not None:
        yield item


def _normalize(path: Path) -> str:
    """Absolute, with '.', '..' and duplicate slashes removed lexically (links are kept: they name members)."""
    return os.path.normpath(os.path.abspath(path))


def _expand_excludes(patterns: Sequence[Path]) -> set[str]:
    """Glob-expand (hidden entries included, like laravel-backup's GLOB_BRACE trick) and resolve."""
    result: set[str] = set()
    for pattern in patterns:
        for match in glob.glob(str(pattern), include_hidden=True):
            result.add(os.path.realpath(match))
    return result


def _within(real: str, roots: set[str]) -> bool:
    """True when ``real`` is one of ``roots`` or lies below one of them."""
    path = real
    while True:
        if path in roots:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
