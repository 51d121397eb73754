"""The archive's ``manifest.json``: what a backup contains, built at backup time, checked at restore time.

``build_manifest`` is a pure function of what the backup produced (``with_skipped`` sets the
files the archive could not hold as listed); ``manifest_parse.parse_manifest`` reads it back as
hostile input. ``member_name_problem`` is the one rule for safe member names, shared with
selection, the archive and extraction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backup_ops.core.models import DumpResult, SkippedFile, TableStat

MANIFEST_NAME = "manifest.json"
# "skipped" was added without a new version: it is optional when read, and older readers ignore keys
# they do not know, so they can still verify newer archives. So were the per-database "roles_member",
# "database_member" and "globals_notes" (optional when read); a reader older than them counts those
# two members as application files, so it disagrees with "files" and refuses the manifest.
FORMAT_VERSION = 1
ENCRYPTION_METHODS = ("aes256", "aes192", "aes128", "none")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

MAX_MEMBER_NAME_BYTES = 4096

_DRIVE_RE = re.compile(r"[A-Za-z]:(\\|$)")  # a Windows drive as first component: "C:" or "C:\x"


# ---------------------------------------------------------------------------- member names


def member_name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative archive path, or None when it is.

    Directory members end with ``/``. Backslashes are legal in POSIX file names, so they are
    refused only where a tool that treats them as separators would escape or go absolute.
    """
    if not name or name == "/":
        return "an empty name"
    if "\x00" in name:
        return "a NUL byte in the name"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "a name that is not valid UTF-8"
    if len(encoded) > MAX_MEMBER_NAME_BYTES:
        return f"a name longer than {MAX_MEMBER_NAME_BYTES} bytes"
    if name.startswith("/"):
        return "an absolute path"
    if name.startswith("\\"):
        return "an absolute path (backslash used as separator)"
    body = name[:-1] if name.endswith("/") else name
    parts = body.split("/")
    if _DRIVE_RE.match(parts[0]):
        return "a drive letter"
    for part in parts:
        if part in ("", "."):
            return "an empty or '.' path component"
        if part == "..":
            return "a '..' component (path traversal)"
        if len(part.encode("utf-8")) > 255:
            return "a path component longer than 255 bytes"
        if "\\" in part and ".." in part.split("\\"):
            return "a '..' component with backslash used as separator (path traversal)"
    return None


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One archive member as written: name, uncompressed size, sha256 and whether it was deflated."""

    name: str
    size: int
    sha256: str
    compressed: bool

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True, slots=True)
class ManifestMember:
    """One member as the manifest records it."""

    name: str
    size: int
    sha256: str

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True)
class ManifestDatabase:
    """One database dump as the manifest records it.

    ``roles_member`` (``db-dumps/postgresql-<db>.roles.sql``) and ``database_member``
    (``….database.json``) hold what an empty server needs before the dump loads: the roles it refers
    to, and the database's owner, settings, privileges and comment. Both are None in archives written
    before they existed, or when nothing could be captured; ``globals_notes`` says what could not be
    captured and why.
    """

    member: str
    conn_id: str
    database: str
    format: str
    compression: str
    snapshot_id: str
    server_version: str
    pg_dump_version: str
    total_rows: int
    tables: tuple[TableStat, ...]
    roles_member: str | None = None
    database_member: str | None = None
    globals_notes: tuple[str, ...] = ()

    @property
    def member_names(self) -> tuple[str, ...]:
        """Every archive member of this database: the dump, then the roles and database settings if present."""
        return tuple(n for n in (self.member, self.roles_member, self.database_member) if n is not None)


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest."""

    format_version: int
    created_at: datetime
    backup_name: str
    archive_name: str
    run: Mapping[str, str]
    tool_versions: Mapping[str, str]
    encryption: str
    databases: tuple[ManifestDatabase, ...]
    file_count: int
    file_bytes: int
    directory_count: int
    members: tuple[ManifestMember, ...]
    skipped: tuple[SkippedFile, ...] = ()

    def members_by_name(self) -> dict[str, ManifestMember]:
        """Members keyed by name (built on demand: a manifest may list millions)."""
        return {m.name: m for m in self.members}

    def database_member_names(self) -> frozenset[str]:
        """The members of the databases (dumps, roles, settings): every other file member is an application file."""
        return frozenset(name for db in self.databases for name in db.member_names)


# ---------------------------------------------------------------------------- building


def build_manifest(
    *,
    backup_name: str,
    created_at: datetime,
    archive_name: str,
    run: Mapping[str, str] | None,
    dumps: Sequence[DumpResult],
    members: Sequence[MemberInfo],
    encryption: str,
    tool_versions: Mapping[str, str],
    skipped: Sequence[SkippedFile] = (),
) -> dict[str, Any]:
    """The manifest of one archive as a JSON-able dict (serialise it with ``manifest_bytes``).

    ``members`` are all members written before the manifest; the manifest never lists itself.
    ``skipped`` are the files not archived as listed (name, reason, detail; never their host
    path). ``encryption`` is the method name only: the password never reaches this function.
    """
    if created_at.tzinfo is None:
        raise ValueError(f"created_at must be timezone-aware, got naive {created_at.isoformat()}.")
    if encryption not in ENCRYPTION_METHODS:
        raise ValueError(f"encryption must be one of {', '.join(ENCRYPTION_METHODS)}; got a different value.")
    names: set[str] = set()
    for member in members:
        problem = member_name_problem(member.name)
        if problem:
            raise ValueError(f"Archive member {member.name!r} has {problem}.")
        if member.name == MANIFEST_NAME or member.name in names:
            raise ValueError(f"Archive member {member.name!r} is listed twice or clashes with {MANIFEST_NAME}.")
        names.add(member.name)
    dump_names = {d.member_name for d in dumps} | {x.member_name for d in dumps for x in d.extra_members}
    missing = sorted(dump_names - names)
    if missing:
        raise ValueError(f"Dump member {missing[0]!r} is not among the archive members.")
    # The roles and settings staged beside a dump belong to its database, not to the application's files.
    files = [m for m in members if not m.is_dir and m.name not in dump_names]
    return {
        "format_version": FORMAT_VERSION,
        "created_at": created_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "backup_name": backup_name,
        "archive_name": archive_name,
        "run": {str(k): str(v) for k, v in (run or {}).items()},
        "tool_versions": {str(k): str(v) for k, v in tool_versions.items()},
        "encryption": encryption,
        "databases": [_database_entry(d) for d in dumps],
        "files": {
            "count": len(files),
            "bytes": sum(m.size for m in files),
            "directories": sum(1 for m in members if m.is_dir),
        },
        "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in members],
        "skipped": [s.to_manifest() for s in skipped],
    }


def with_skipped(manifest: Mapping[str, Any], skipped: Sequence[SkippedFile]) -> dict[str, Any]:
    """A copy of a built ``manifest`` whose ``skipped`` list is ``skipped`` (what the archive could not hold)."""
    return {**manifest, "skipped": [s.to_manifest() for s in skipped]}


def _database_entry(dump: DumpResult) -> dict[str, Any]:
    return {
        "member": dump.member_name,
        "conn_id": dump.conn_id,
        "database": dump.database,
        "format": dump.format,
        "compression": dump.compression,
        "snapshot_id": dump.snapshot_id,
        "server_version": dump.server_version,
        "pg_dump_version": dump.pg_dump_version,
        "total_rows": dump.total_rows,
        "tables": [
            {"schema": t.schema, "name": t.name, "row_count": t.row_count, "columns": list(t.columns)}
            for t in dump.tables
        ],
        "roles_member": dump.roles_member,
        "database_member": dump.database_member,
        "globals_notes": list(dump.globals_notes),
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Deterministic UTF-8 JSON (sorted keys, indent 2, trailing newline): same input, same bytes."""
    text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"
