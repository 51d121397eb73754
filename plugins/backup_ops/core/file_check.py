"""Restored files against the manifest: every file there, every byte as it was backed up.

After ``extract.safe_extract`` wrote the application's files below a restore's folder,
``check_restored_files`` reads each back and compares its size and SHA-256 with the manifest's
record; a missing file, a link or anything but a regular file where one belongs, or different bytes,
fails with a sentence naming the file. Nothing is followed outside the folder (``O_NOFOLLOW`` on
every file, directories checked with ``lstat``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backup_ops.core.errors import VerificationError
from backup_ops.core.fileio import sha256_of_stream
from backup_ops.core.manifest import ManifestMember


@dataclass(frozen=True)
class FilesChecked:
    """How many files (and directories) were checked, and their bytes."""

    files: int
    directories: int
    bytes: int


def check_restored_files(root: Path, members: Sequence[ManifestMember]) -> FilesChecked:
    """Compare every member below ``root`` with its manifest record; raises VerificationError at the first mismatch."""
    files = directories = total = 0
    for member in members:
        path = os.path.join(root, *member.name.rstrip("/").split("/"))
        if member.is_dir:
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                raise VerificationError(f"Restored directory {member.name!r} is missing below {root}.") from None
            if not stat.S_ISDIR(mode):
                raise VerificationError(f"Restored {member.name!r} below {root} is not a directory.")
            directories += 1
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise VerificationError(f"Restored file {member.name!r} is missing below {root}.") from None
        except OSError as exc:
            raise VerificationError(f"Restored file {member.name!r} below {root} cannot be read: "
                                    f"{exc.strerror}.") from exc
        with os.fdopen(fd, "rb", buffering=0) as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise VerificationError(f"Restored {member.name!r} below {root} is not a regular file.")
            digest, size = sha256_of_stream(stream)
        if (digest, size) != (member.sha256, member.size):
            raise VerificationError(f"Restored file {member.name!r} does not match the manifest: {size} bytes with "
                                    f"sha256 {digest[:12]}…, the backup recorded {member.size} bytes with sha256 "
                                    f"{member.sha256[:12]}….")
        files += 1
        total += size
    return FilesChecked(files, directories, total)
