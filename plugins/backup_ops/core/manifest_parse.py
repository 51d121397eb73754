"""Reading ``manifest.json`` back as hostile input: a restore may fetch an archive someone else wrote.

Every key, type, size and count is checked, and anything off raises ArchiveError with one
sentence naming the key path. The limits sit far above any real backup (a 1M-file tree gives a
~200 MB manifest) and exist so a crafted manifest cannot exhaust memory or time on restore.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backup_ops.core.errors import ArchiveError
from backup_ops.core.manifest import (
    EMPTY_SHA256,
    ENCRYPTION_METHODS,
    MANIFEST_NAME,
    MAX_MEMBER_NAME_BYTES,
    Manifest,
    ManifestDatabase,
    ManifestMember,
    member_name_problem,
)
from backup_ops.core.models import SkippedFile, TableStat

KNOWN_FORMAT_VERSIONS = frozenset({1})
MAX_MANIFEST_BYTES = 512 * 1024 * 1024
MAX_MEMBERS = 5_000_000
MAX_DATABASES = 10_000
MAX_TABLES = 1_000_000
MAX_COLUMNS = 10_000
MAX_TEXT = 4096
MAX_MAPPING_ITEMS = 1000
MAX_SKIPPED_NAME = 4 * MAX_MEMBER_NAME_BYTES  # printable names show an undecodable byte as four characters
MAX_REASON = 64
MAX_NOTES = 100
MAX_SIZE = 2**63 - 1

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate ``manifest.json`` bytes; anything malformed raises ArchiveError."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{MANIFEST_NAME} is {len(data)} bytes, more than the {MAX_MANIFEST_BYTES} accepted.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{MANIFEST_NAME} is not valid UTF-8 (byte {exc.start}).") from exc
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except _ManifestSyntaxError as exc:
        raise ArchiveError(f"{MANIFEST_NAME} is malformed: {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{MANIFEST_NAME} is not valid JSON: {exc.msg} at line {exc.lineno}.") from exc
    except RecursionError as exc:
        raise ArchiveError(f"{MANIFEST_NAME} is nested too deeply to be a manifest.") from exc
    return _Reader(raw).manifest()


class _ManifestSyntaxError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key would let a crafted manifest say different things to different readers.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _ManifestSyntaxError(f"key {_show(key)} appears twice in one object")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _ManifestSyntaxError(f"{name} is not a valid JSON number")


def _show(value: Any) -> str:
    """A short repr of hostile input for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Reader:
    """Typed accessors over the raw JSON that fail with the offending key path."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @staticmethod
    def fail(where: str, accepted: str, value: Any) -> ArchiveError:
        return ArchiveError(f"{MANIFEST_NAME} is malformed: {where} must be {accepted}, got {_show(value)}.")

    def obj(self, value: Any, where: str, required: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "an object", type(value).__name__)
        for key in required:
            if key not in value:
                raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where} has no {key!r} key.")
        return value

    def text(self, value: Any, where: str, max_len: int = MAX_TEXT) -> str:
        if not isinstance(value, str) or len(value) > max_len:
            raise self.fail(where, f"a string of at most {max_len} characters", value)
        return value

    def count(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
            raise self.fail(where, "a whole number ≥ 0", value)
        return value

    def items(self, value: Any, where: str, limit: int) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "a list", type(value).__name__)
        if len(value) > limit:
            raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where} has {len(value)} entries, more than {limit}.")
        return value

    def mapping(self, value: Any, where: str) -> dict[str, str]:
        value = self.obj(value, where, ())
        if len(value) > MAX_MAPPING_ITEMS:
            raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where} has more than {MAX_MAPPING_ITEMS} keys.")
        return {self.text(k, f"{where} key"): self.text(v, f"{where}.{k}") for k, v in value.items()}

    def manifest(self) -> Manifest:
        root = self.obj(self.raw, "the top level", ("format_version",))
        version = root["format_version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise self.fail("format_version", "a whole number", version)
        if version not in KNOWN_FORMAT_VERSIONS:
            raise ArchiveError(
                f"{MANIFEST_NAME} has format version {version}, which this backup-ops does not know "
                f"(known: {', '.join(map(str, sorted(KNOWN_FORMAT_VERSIONS)))}); upgrade backup-ops to read it."
            )
        self.obj(root, "the top level", (
            "created_at", "backup_name", "archive_name", "run", "tool_versions", "encryption",
            "databases", "files", "members",
        ))
        encryption = root["encryption"]
        if encryption not in ENCRYPTION_METHODS:
            raise self.fail("encryption", "one of " + ", ".join(ENCRYPTION_METHODS), encryption)
        members = self.members(root["members"])
        databases = self.databases(root["databases"], {m.name: m for m in members})
        file_count, file_bytes, directory_count = self.files(root["files"], members, databases)
        return Manifest(
            format_version=version,
            created_at=self.timestamp(root["created_at"]),
            backup_name=self.text(root["backup_name"], "backup_name"),
            archive_name=self.text(root["archive_name"], "archive_name"),
            run=self.mapping(root["run"], "run"),
            tool_versions=self.mapping(root["tool_versions"], "tool_versions"),
            encryption=encryption,
            databases=databases,
            file_count=file_count,
            file_bytes=file_bytes,
            directory_count=directory_count,
            members=members,
            skipped=self.skipped(root.get("skipped", [])),  # absent in manifests written before it existed
        )

    def timestamp(self, value: Any) -> datetime:
        text = self.text(value, "created_at", 64)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise self.fail("created_at", "an ISO 8601 timestamp", value) from None
        if parsed.tzinfo is None:
            raise self.fail("created_at", "an ISO 8601 timestamp with a time zone", value)
        return parsed.astimezone(UTC)

    def members(self, value: Any) -> tuple[ManifestMember, ...]:
        result = []
        seen: set[str] = set()
        for i, item in enumerate(self.items(value, "members", MAX_MEMBERS)):
            where = f"members[{i}]"
            item = self.obj(item, where, ("name", "size", "sha256"))
            name = self.text(item["name"], f"{where}.name", MAX_MEMBER_NAME_BYTES)
            problem = member_name_problem(name)
            if problem:
                raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where}.name {_show(name)} has {problem}.")
            if name == MANIFEST_NAME:
                raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where} lists the manifest itself.")
            if name.rstrip("/") in seen:
                raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where}.name {_show(name)} is listed twice.")
            seen.add(name.rstrip("/"))
            size = self.count(item["size"], f"{where}.size")
            sha = item["sha256"]
            if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
                raise self.fail(f"{where}.sha256", "64 lowercase hex digits", sha)
            if name.endswith("/") and (size != 0 or sha != EMPTY_SHA256):
                raise ArchiveError(f"{MANIFEST_NAME} is malformed: directory {where} {_show(name)} has content.")
            result.append(ManifestMember(name, size, sha))
        return tuple(result)

    def skipped(self, value: Any) -> tuple[SkippedFile, ...]:
        result = []
        for i, item in enumerate(self.items(value, "skipped", MAX_MEMBERS)):
            where = f"skipped[{i}]"
            item = self.obj(item, where, ("name", "reason", "detail"))
            # A reason this version does not know comes from a newer one: kept as recorded.
            result.append(SkippedFile(
                name=self.text(item["name"], f"{where}.name", MAX_SKIPPED_NAME),
                reason=self.text(item["reason"], f"{where}.reason", MAX_REASON),
                detail=self.text(item["detail"], f"{where}.detail"),
            ))
        return tuple(result)

    def databases(self, value: Any, members: Mapping[str, ManifestMember]) -> tuple[ManifestDatabase, ...]:
        result = []
        for i, item in enumerate(self.items(value, "databases", MAX_DATABASES)):
            where = f"databases[{i}]"
            keys = ("member", "conn_id", "database", "format", "compression", "snapshot_id", "server_version",
                    "pg_dump_version", "total_rows", "tables")
            item = self.obj(item, where, keys)
            member = self.text(item["member"], f"{where}.member")
            if member not in members or members[member].is_dir:
                raise ArchiveError(
                    f"{MANIFEST_NAME} is malformed: {where}.member {_show(member)} is not a listed file."
                )
            if item["format"] not in ("plain", "custom"):
                raise self.fail(f"{where}.format", "'plain' or 'custom'", item["format"])
            tables = self.tables(item["tables"], where)
            total = self.count(item["total_rows"], f"{where}.total_rows")
            if total != sum(t.row_count for t in tables):
                raise ArchiveError(
                    f"{MANIFEST_NAME} is malformed: {where}.total_rows is {total} but its tables add up to "
                    f"{sum(t.row_count for t in tables)}."
                )
            result.append(ManifestDatabase(
                member=member,
                conn_id=self.text(item["conn_id"], f"{where}.conn_id"),
                database=self.text(item["database"], f"{where}.database"),
                format=item["format"],
                compression=self.text(item["compression"], f"{where}.compression"),
                snapshot_id=self.text(item["snapshot_id"], f"{where}.snapshot_id"),
                server_version=self.text(item["server_version"], f"{where}.server_version"),
                pg_dump_version=self.text(item["pg_dump_version"], f"{where}.pg_dump_version"),
                total_rows=total,
                tables=tables,
                # The next three are absent in manifests written before they existed.
                roles_member=self.extra_member(item.get("roles_member"), f"{where}.roles_member", members),
                database_member=self.extra_member(item.get("database_member"), f"{where}.database_member", members),
                globals_notes=tuple(
                    self.text(n, f"{where}.globals_notes[{j}]")
                    for j, n in enumerate(self.items(item.get("globals_notes", []), f"{where}.globals_notes",
                                                     MAX_NOTES))
                ),
            ))
        names = [name for d in result for name in d.member_names]
        if len(set(names)) != len(names):
            raise ArchiveError(f"{MANIFEST_NAME} is malformed: two databases, or a dump and its roles or settings, "
                               "share one member.")
        return tuple(result)

    def extra_member(self, value: Any, where: str, members: Mapping[str, ManifestMember]) -> str | None:
        """A member staged beside a dump (its roles or settings): None, or a file the manifest lists."""
        if value is None:
            return None
        name = self.text(value, where)
        if name not in members or members[name].is_dir:
            raise ArchiveError(f"{MANIFEST_NAME} is malformed: {where} {_show(name)} is not a listed file.")
        return name

    def tables(self, value: Any, parent: str) -> tuple[TableStat, ...]:
        result = []
        for i, item in enumerate(self.items(value, f"{parent}.tables", MAX_TABLES)):
            where = f"{parent}.tables[{i}]"
            item = self.obj(item, where, ("schema", "name", "row_count", "columns"))
            columns = tuple(
                self.text(c, f"{where}.columns[{j}]")
                for j, c in enumerate(self.items(item["columns"], f"{where}.columns", MAX_COLUMNS))
            )
            result.append(TableStat(
                schema=self.text(item["schema"], f"{where}.schema"),
                name=self.text(item["name"], f"{where}.name"),
                row_count=self.count(item["row_count"], f"{where}.row_count"),
                columns=columns,
            ))
        return tuple(result)

    def files(
        self, value: Any, members: Sequence[ManifestMember], databases: Sequence[ManifestDatabase]
    ) -> tuple[int, int, int]:
        item = self.obj(value, "files", ("count", "bytes", "directories"))
        count = self.count(item["count"], "files.count")
        total = self.count(item["bytes"], "files.bytes")
        directories = self.count(item["directories"], "files.directories")
        dumps = {name for d in databases for name in d.member_names}
        files = [m for m in members if not m.is_dir and m.name not in dumps]
        actual = (len(files), sum(m.size for m in files), sum(1 for m in members if m.is_dir))
        if (count, total, directories) != actual:
            raise ArchiveError(
                f"{MANIFEST_NAME} is malformed: files says {count} files, {total} bytes, {directories} directories "
                f"but members list {actual[0]} files, {actual[1]} bytes, {actual[2]} directories."
            )
        return count, total, directories
