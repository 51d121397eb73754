"""Which files go into a backup: laravel-backup's ``source.files`` semantics, streamed.

``select_files`` walks the configured includes depth-first in sorted order and yields one
``SelectedEntry`` per regular file or directory, never holding more than the listings of the
directories on the current path, so a tree of millions of files costs no more memory than a
small one.

Decisions beyond laravel-backup, each because a silent surprise in a backup is worse than a
loud one:

* An include outside ``relative_path`` raises FileSelectionError before anything is yielded.
  laravel-backup falls back to the absolute path, which can give two different files the same
  member name and drop one of them.
* An include path itself is followed even when it is a symbolic link (the operator named it),
  like Symfony Finder's ``in()``; ``follow_links`` governs links found while walking.
* ``ignore_unreadable_directories`` skips unreadable *directories* only. An unreadable regular
  file always fails: missing one key file silently is worse than a failed, notified run.
* Overlapping includes (``/srv/app`` and ``/srv/app/storage``) are each walked once: a walk
  skips any path that is itself an include, and each include is handled once, in config order.
* Names that ``restore`` would refuse (not valid UTF-8, backslash traversal such as
  ``..\\x``) are skipped with a warning, so an archive never holds a member its own restore
  rejects.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from backup_ops.core.config import FileSource
from backup_ops.core.errors import FileSelectionError
from backup_ops.core.manifest import member_name_problem

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SelectedEntry:
    """A regular file or directory to archive, under its member name (posix, no leading or trailing '/')."""

    path: Path
    arcname: str
    is_dir: bool
    size: int
    mtime: float = 0.0
    mode: int = 0

    @property
    def member_name(self) -> str:
        """The zip member name: ``arcname``, with a trailing '/' for directories."""
        return self.arcname + "/" if self.is_dir else self.arcname


def select_files(
    source: FileSource,
    always_exclude: Sequence[Path] = (),
    log: logging.Logger | None = None,
) -> Iterator[SelectedEntry]:
    """Yield the files and directories ``source`` selects, depth-first in sorted order.

    ``always_exclude`` (the staging directory, local destinations) applies even to included
    files, so a backup never contains itself. Raises FileSelectionError for an include outside
    ``relative_path`` and for unreadable files or directories (see the module docstring).
    """
    yield from _Selection(source, always_exclude, log or _LOG).entries()


class _Selection:
    """The state of one walk: resolved excludes, include bookkeeping and loop protection."""

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
        self.visited: set[tuple[int, int]] = set()
        self.counts = {"files": 0, "bytes": 0, "directories": 0, "links": 0, "special": 0, "missing": 0}

    # -- top level

    def entries(self) -> Iterator[SelectedEntry]:
        for include in self.includes:
            self.arcname(include)  # fail before yielding anything when an include is outside relative_path
        for include in self.includes:
            yield from self.include(include)
        c = self.counts
        self.log.info(
            "Selected %d files (%d bytes) and %d directories; skipped %d symbolic links, %d special files, "
            "%d missing includes.", c["files"], c["bytes"], c["directories"], c["links"], c["special"], c["missing"],
        )

    def include(self, path: str) -> Iterator[SelectedEntry]:
        try:
            st = os.stat(path)  # follows: an include that is a link means its target
        except FileNotFoundError:
            self.counts["missing"] += 1
            self.log.warning("Include path %s does not exist, skipping.", path)
            return
        except PermissionError as exc:
            self.unreadable_directory(os.path.dirname(path), exc)  # an ancestor cannot be searched
            return
        except OSError as exc:
            raise FileSelectionError(f"Include path {path} cannot be read: {exc.strerror}.") from exc
        real = os.path.realpath(path)
        if stat.S_ISREG(st.st_mode):
            # laravel-backup yields an included file as-is; only the always-excluded paths apply.
            if _within(real, self.always_excluded):
                self.log.info("Include path %s is inside the staging directory or a destination, skipping.", path)
                return
            entry = self.file_entry(path, st)
            if entry is not None:
                yield entry
        elif stat.S_ISDIR(st.st_mode):
            if _within(real, self.excluded):
                self.log.info("Include path %s is excluded, skipping.", path)
                return
            yield from self.walk(path, real, st)
        else:
            self.special(path, st)

    # -- the walk

    def walk(self, root: str, root_real: str, root_st: os.stat_result) -> Iterator[SelectedEntry]:
        listing = self.listing(root)
        if listing is None:
            return
        if self.follow_links:
            self.visited.add((root_st.st_dev, root_st.st_ino))
        if self.arcname(root):  # the relative_path root itself has no member of its own
            entry = self.dir_entry(root, root_st)
            if entry is None:
                return
            yield entry
        # An explicit stack, not recursion: trees can be deeper than Python's recursion limit.
        stack: list[tuple[str, str, Iterator[os.DirEntry[str]]]] = [(root, root_real, iter(listing))]
        while stack:
            parent, parent_real, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            path = os.path.join(parent, child.name)
            if path in self.include_set:
                continue  # walked as its own include, exactly once
            found = self.inspect(path, child, os.path.join(parent_real, child.name))
            if found is None:
                continue
            st, real = found
            if stat.S_ISDIR(st.st_mode):
                sub_listing = self.listing(path)
                if sub_listing is None:
                    continue
                entry = self.dir_entry(path, st)
                if entry is None:
                    continue
                if self.follow_links:
                    self.visited.add((st.st_dev, st.st_ino))
                yield entry
                stack.append((path, real, iter(sub_listing)))
            elif stat.S_ISREG(st.st_mode):
                file_entry = self.file_entry(path, st)
                if file_entry is not None:
                    yield file_entry
            else:
                self.special(path, st)

    def inspect(self, path: str, child: os.DirEntry[str], real: str) -> tuple[os.stat_result, str] | None:
        """The stat and real path to use for ``child``, or None when it is skipped."""
        try:
            is_link = child.is_symlink()
            if not is_link:
                # Not a link, so its real path is its parent's real path plus its name; no
                # per-file realpath() calls, and only equality with an exclude needs checking
                # because the parent already passed the "below an excluded directory" test.
                if real in self.excluded:
                    return None
                return child.stat(follow_symlinks=False), real
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
            return st, real
        except FileNotFoundError:
            return None  # removed since the directory was listed: nothing to back up
        except PermissionError as exc:
            self.unreadable_directory(os.path.dirname(path), exc)
            return None
        except OSError as exc:
            raise FileSelectionError(f"Cannot inspect {path}: {exc.strerror}.") from exc

    def listing(self, path: str) -> list[os.DirEntry[str]] | None:
        """The sorted entries of directory ``path``, or None when it is skipped."""
        try:
            # scandir needs read permission, stat of the entries needs search (x) permission.
            if not os.access(path, os.R_OK | os.X_OK, effective_ids=True):
                raise PermissionError(13, "Permission denied", path)
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except PermissionError as exc:
            self.unreadable_directory(path, exc)
            return None
        except (FileNotFoundError, NotADirectoryError):
            return None  # removed or replaced since its parent was listed
        except OSError as exc:
            raise FileSelectionError(f"Directory {path} cannot be listed: {exc.strerror}.") from exc

    # -- entries

    def file_entry(self, path: str, st: os.stat_result) -> SelectedEntry | None:
        if not os.access(path, os.R_OK, effective_ids=True):
            # Never skipped, whatever ignore_unreadable_directories says: see the module docstring.
            raise FileSelectionError(
                f"File {path} is not readable by this process (uid {os.geteuid()}): fix its permissions or "
                "exclude it."
            )
        arcname = self.named(path)
        if arcname is None:
            return None
        self.counts["files"] += 1
        self.counts["bytes"] += st.st_size
        return SelectedEntry(Path(path), arcname, False, st.st_size, st.st_mtime, stat.S_IMODE(st.st_mode))

    def dir_entry(self, path: str, st: os.stat_result) -> SelectedEntry | None:
        arcname = self.named(path)
        if arcname is None:
            return None
        self.counts["directories"] += 1
        return SelectedEntry(Path(path), arcname, True, 0, st.st_mtime, stat.S_IMODE(st.st_mode))

    def named(self, path: str) -> str | None:
        """The member name for ``path``, or None (with a warning) when restore would refuse it."""
        arcname = self.arcname(path)
        problem = member_name_problem(arcname)
        if problem:
            self.log.warning("Skipping %r: its archive name has %s, which restore refuses; rename it.", path, problem)
            return None
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

    def unreadable_directory(self, path: str, exc: OSError) -> None:
        """Warn and carry on when unreadable directories are ignored; otherwise fail."""
        if not self.ignore_unreadable:
            raise FileSelectionError(
                f"Directory {path} is not readable by this process (uid {os.geteuid()}): fix its permissions or "
                "set source.files.ignore_unreadable_directories: true to skip unreadable directories."
            ) from exc
        self.log.warning("Directory %s is not readable, skipping it "
                         "(source.files.ignore_unreadable_directories is true).", path)

    def special(self, path: str, st: os.stat_result) -> None:
        self.counts["special"] += 1
        kind = ("socket" if stat.S_ISSOCK(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode)
                else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file")
        self.log.warning("Skipping %s %s: only regular files and directories are backed up.", kind, path)


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
