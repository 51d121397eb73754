"""Taking a backup archive apart for a restore, refusing every entry that could escape the target.

The archive comes from storage that others can write to, so its names and entry types are hostile
(see ``safe_extract``). pyzipper is imported inside the reader functions, so importing this module
stays cheap.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Container, Iterable
from pathlib import Path
from typing import Any

from backup_ops.core.archive_read import derive_keys_ahead, open_info, open_zip, read_chunks, unique_infos
from backup_ops.core.errors import ArchiveError, UnsafeArchiveError
from backup_ops.core.manifest import MANIFEST_NAME, member_name_problem

_THREATS = {
    stat.S_IFLNK: "a symbolic link (it could point outside the target directory)",
    stat.S_IFCHR: "a character device node",
    stat.S_IFBLK: "a block device node",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def safe_extract(
    path: Path,
    target_dir: Path,
    *,
    password: bytes | None,
    members: Iterable[str] | None = None,
    max_total_bytes: int | None = None,
    listed: Container[str] | None = None,
) -> list[Path]:
    """Extract regular files and directories into an empty ``target_dir``, refusing anything unsafe.

    Threat model: the archive comes from storage that others can write to, so its names and
    entry types are hostile. Before anything is written, every entry in the archive (not only
    the requested ones) is checked and the whole archive is refused with UnsafeArchiveError
    naming the member and the threat for: absolute paths, drive letters, '..' components
    (also with backslashes as separators), empty or '.' components, names that are not UTF-8,
    symbolic links, device nodes, FIFOs, sockets and entries of unknown type, duplicate names, a
    name that is both a file and a directory, and a hard link: a second name for another entry's
    stored data (two entries at one offset, how a zip can alias one file under two names). With
    ``listed`` (the manifest's member names), any other entry but ``manifest.json`` is refused too:
    a member added after the backup was written. Extraction only creates regular files (0600) and directories (0700)
    with O_EXCL|O_NOFOLLOW below a directory that was empty, so nothing outside it can be
    reached or overwritten; stored permissions, owners and times are not applied. Member
    sizes are capped at their recorded size and in total at ``max_total_bytes`` (zip bombs).
    On error the partly written member is removed; ``target_dir`` may hold earlier members
    and should be discarded. Returns the paths created, in archive order.
    """
    path = Path(path)
    root = _prepare_target(path, Path(target_dir))
    with open_zip(path, password) as zf:
        infos = unique_infos(zf, path, UnsafeArchiveError)
        _refuse_unsafe(infos, path)
        _refuse_aliases(infos, path)
        if listed is not None:
            _refuse_unlisted(infos, listed, path)
        wanted = list(infos.values())
        if members is not None:
            names = list(dict.fromkeys(members))
            absent = next((n for n in names if n not in infos), None)
            if absent is not None:
                raise ArchiveError(f"Archive {path} has no member named {absent!r}.")
            wanted = [infos[n] for n in names]
        declared = sum(info.file_size for info in wanted)
        if max_total_bytes is not None and declared > max_total_bytes:
            raise UnsafeArchiveError(f"Archive {path} would extract to {declared} bytes, more than the "
                                     f"{max_total_bytes} allowed (zip bomb or wrong limit).")
        created: list[Path] = []
        derive_keys_ahead(zf, [info for info in wanted if not info.filename.endswith("/")])
        for info in wanted:
            dest = os.path.join(root, *info.filename.rstrip("/").split("/"))
            if info.filename.endswith("/"):
                os.makedirs(dest, mode=0o700, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                _extract_file(zf, info, dest, path, password)
            created.append(Path(dest))
    return created


def _prepare_target(path: Path, target_dir: Path) -> str:
    if target_dir.exists():
        if not target_dir.is_dir():
            raise ArchiveError(f"Cannot extract {path} into {target_dir}: it is not a directory.")
        with os.scandir(target_dir) as it:
            if next(it, None) is not None:
                raise UnsafeArchiveError(
                    f"Refusing to extract {path} into {target_dir}: the directory is not empty and extracting "
                    "could overwrite or mix with its files; use a new, empty directory."
                )
    else:
        target_dir.mkdir(mode=0o700, parents=True)
    return os.path.realpath(target_dir)


def _refuse_unsafe(infos: dict[str, Any], path: Path) -> None:
    files: set[str] = set()
    directories: set[str] = set()
    for name, info in infos.items():
        # pyzipper cuts names at a NUL byte; the original name shows the trick.
        problem = member_name_problem(name) or member_name_problem(info.orig_filename)
        if problem is None:
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind in _THREATS:
                problem = _THREATS[kind]
            elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                problem = f"an entry of unknown type (mode {kind:#o})"
            elif kind == stat.S_IFDIR and not name.endswith("/"):
                problem = "a directory entry without a trailing '/'"
            elif name.endswith("/") and info.file_size:
                problem = "a directory entry with content"
        if problem:
            raise UnsafeArchiveError(f"Refusing to extract {path}: member {name!r} is {problem}.")
        bare = name.rstrip("/")
        if bare in files or (not name.endswith("/") and bare in directories):
            raise UnsafeArchiveError(f"Refusing to extract {path}: member {name!r} is both a file and a directory "
                                     "(or is listed twice).")
        parts = bare.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                raise UnsafeArchiveError(f"Refusing to extract {path}: member {name!r} needs {parent!r} to be a "
                                         "directory, but it is a file.")
            directories.add(parent)
        if name.endswith("/"):
            directories.add(bare)
        else:
            files.add(bare)


def _refuse_aliases(infos: dict[str, Any], path: Path) -> None:
    """Two entries whose data starts at one offset are one file under two names: a hard link, refused."""
    owners: dict[int, str] = {}
    for name, info in infos.items():
        if name.endswith("/"):
            continue
        first = owners.setdefault(info.header_offset, name)
        if first != name:
            raise UnsafeArchiveError(f"Refusing to extract {path}: member {name!r} is a hard link (it shares its "
                                     f"stored data with {first!r}).")


def _refuse_unlisted(infos: dict[str, Any], listed: Container[str], path: Path) -> None:
    extra = next((name for name in infos if name != MANIFEST_NAME and name not in listed), None)
    if extra is not None:
        raise UnsafeArchiveError(f"Refusing to extract {path}: member {extra!r} is not listed in its manifest "
                                 "(it was added after the backup was written).")


def _extract_file(zf: Any, info: Any, dest: str, path: Path, password: bytes | None) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open_info(zf, info, path, password) as stream:
            written = 0
            for chunk in read_chunks(stream, info.filename, path):
                written += len(chunk)
                if written > info.file_size:
                    raise UnsafeArchiveError(f"Refusing to extract {path}: member {info.filename!r} holds more "
                                             "data than its recorded size (zip bomb).")
                out.write(chunk)
    except BaseException:
        Path(dest).unlink(missing_ok=True)
        raise
