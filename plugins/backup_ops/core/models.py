"""Plain data shared by the core, the adapters and the operators (no Airflow, no I/O).

Everything that crosses a task boundary has ``to_dict``/``from_dict`` so it travels as
small JSON-able XCom values; secrets never appear in any of these.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ARCHIVE_TIMESTAMP_FORMAT = "%Y-%m-%d-%H-%M-%S"
_TIMESTAMP_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})\.zip$")


def human_bytes(count: float) -> str:
    """1536 → '1.50 KB' (binary units, like laravel-backup's Format::humanReadableSize)."""
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} TB"


def run_folder_name(dag_id: str, run_id: str) -> str:
    """A file-system-safe name for one DAG run (its staging folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dag_id}__{run_id}")[:200]


def archive_file_name(prefix: str, created_at: datetime) -> str:
    """``<prefix><YYYY-MM-DD-HH-MM-SS>.zip`` in UTC, laravel-backup's naming."""
    return f"{prefix}{created_at.astimezone(UTC).strftime(ARCHIVE_TIMESTAMP_FORMAT)}.zip"


def date_from_archive_name(name: str) -> datetime | None:
    """The UTC date in an archive's file name, or None when the name does not carry one.

    laravel-backup only trusts a basename that is exactly ``YYYY-MM-DD-HH-MM-SS.zip``; a
    prefixed or otherwise different name falls back to the file's modification time.
    """
    base = name.rsplit("/", 1)[-1]
    match = _TIMESTAMP_IN_NAME.fullmatch(base)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), ARCHIVE_TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_backup_key(key: str) -> bool:
    """Whether a key below the backup folder is a backup archive (laravel-backup: ``.zip`` only)."""
    return key.lower().endswith(".zip")


@dataclass(frozen=True)
class BackupFile:
    """One backup archive on a destination: its key below the destination root, date and size."""

    path: str
    date: datetime
    size: int


@dataclass(frozen=True)
class TableStat:
    """A table's exact row count and column names, read inside the dump's snapshot."""

    schema: str
    name: str
    row_count: int
    columns: tuple[str, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class StagedMember:
    """A small file staged beside a dump that goes into the archive with it.

    ``kind`` says what it holds: ``roles`` (``postgresql-<db>.roles.sql``, the roles the dump refers
    to) or ``database`` (``postgresql-<db>.database.json``, the database's own settings), which a
    plain dump omits and an empty server lacks.
    """

    kind: str
    member_name: str
    staged_path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DumpResult:
    """What one database dump produced, as recorded in the manifest."""

    conn_id: str
    database: str
    member_name: str          # e.g. db-dumps/postgresql-appdb.sql.gz
    staged_path: str          # absolute path of the dump in the staging directory
    format: str               # plain | custom
    compression: str          # e.g. gzip:6
    size: int
    sha256: str
    duration_s: float
    snapshot_id: str
    server_version: str
    pg_dump_version: str
    tables: tuple[TableStat, ...] = field(default_factory=tuple)
    extra_members: tuple[StagedMember, ...] = ()
    """The roles and database settings staged beside the dump (empty when none could be captured)."""
    globals_notes: tuple[str, ...] = ()
    """What could not be captured of the roles and database settings, and why (one sentence each)."""
    staged_encryption: str = "none"
    """``aes128``/``aes192``/``aes256`` when the staged file is the dump already encrypted as its archive member
    (``core.sealed_member``: salt, verifier, ciphertext, HMAC); ``size`` and ``sha256`` stay the compressed dump's."""

    @property
    def total_rows(self) -> int:
        return sum(t.row_count for t in self.tables)

    @property
    def roles_member(self) -> str | None:
        """The archive member holding the roles the dump refers to, if one was staged."""
        return self._extra("roles")

    @property
    def database_member(self) -> str | None:
        """The archive member holding the database's own settings, if one was staged."""
        return self._extra("database")

    def _extra(self, kind: str) -> str | None:
        return next((m.member_name for m in self.extra_members if m.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tables"] = [{**asdict(t), "columns": list(t.columns)} for t in self.tables]
        data["extra_members"] = [asdict(m) for m in self.extra_members]
        data["globals_notes"] = list(self.globals_notes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DumpResult:
        tables = tuple(
            TableStat(t["schema"], t["name"], int(t["row_count"]), tuple(t["columns"])) for t in data.get("tables", ())
        )
        # Both are absent from results written before they existed.
        extras = tuple(StagedMember(**m) for m in data.get("extra_members", ()))
        notes = tuple(str(n) for n in data.get("globals_notes", ()))
        return cls(**{**data, "tables": tables, "extra_members": extras, "globals_notes": notes})


@dataclass(frozen=True)
class Receipt:
    """The small JSON written beside each archive so monitoring can verify without downloading."""

    archive: str
    size: int
    sha256: str
    created_at: str
    manifest_sha256: str | None = None
    format_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Receipt:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Integrity(StrEnum):
    """What comparing an archive with its receipt showed."""

    INTACT = "intact"          # size matches the receipt, and so does the SHA-256 where it could be compared
    DAMAGED = "damaged"        # size or SHA-256 contradicts the receipt: the archive is not the one published
    UNVERIFIED = "unverified"  # nothing to compare with (no or unreadable receipt, e.g. a laravel-backup archive)


@dataclass(frozen=True)
class ArchiveIntegrity:
    """The integrity of one archive on a destination, and what it rests on (``detail``, one phrase).

    A damaged archive protects nothing: cleanup keeps it for a human and plans as if it were not
    there. An unverified one is neither damaged nor proof of a good backup.
    """

    path: str
    state: Integrity
    detail: str

    @property
    def damaged(self) -> bool:
        return self.state is Integrity.DAMAGED

    @property
    def intact(self) -> bool:
        return self.state is Integrity.INTACT

    def describe(self) -> str:
        """``app/x.zip: damaged (1000 bytes, but its receipt says 2048)``."""
        return f"{self.path}: {self.state.value} ({self.detail})"


SKIP_REASONS: dict[str, str] = {
    "vanished": "removed between listing and archiving",
    "replaced": "swapped for a symbolic link, another file or a non-regular file (or its directory was)",
    "unreadable": "could not be opened: permission denied",
    "unreadable_directory": "a directory that could not be read (ignore_unreadable_directories: true)",
    "changed": "changed while it was read; the archive holds the bytes read",
    "bad_name": "a name restore would refuse (not valid UTF-8, or backslash traversal)",
    "fifo": "a FIFO (named pipe)",
    "socket": "a socket",
    "device": "a device node",
}
"""Why a file is not in the archive as it was listed, by the code recorded in the manifest."""

FAILABLE_SKIP_REASONS = tuple(r for r in SKIP_REASONS if r != "unreadable_directory")
"""The codes ``source.files.fail_on`` accepts (unreadable directories are ``ignore_unreadable_directories``)."""


def printable_name(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (os.fsdecode's surrogates) shown as ``\\xNN``: safe to log or store."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that is not in the archive as it was listed, and why (``reason``: a SKIP_REASONS code).

    ``name`` is its member name and ``detail`` one phrase that reads after it ("was removed after it
    was listed"), both printable; ``path`` is where it was on disk, for the task log and error
    messages, never for the manifest. A ``changed`` file is in the archive, holding the bytes read.
    """

    name: str
    reason: str
    detail: str
    path: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "detail": self.detail, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkippedFile:
        return cls(str(data["name"]), str(data["reason"]), str(data["detail"]), str(data.get("path", "")))

    def to_manifest(self) -> dict[str, str]:
        """The manifest's record: name, reason and detail (the host path stays out of the archive)."""
        return {"name": self.name, "reason": self.reason, "detail": self.detail}
