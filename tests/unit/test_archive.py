"""The backup zip: build, verify, stream and safely extract (round trips and hostile archives)."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import random
import re
import socket
import stat
import struct
import subprocess
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pyzipper

from backup_ops.airflow import backup_steps as steps
from backup_ops.airflow.staging import prepare_staging
from backup_ops.core import archive as archive_module
from backup_ops.core import archive_source
from backup_ops.core.archive import ArchiveResult, build_archive, is_precompressed, make_durable
from backup_ops.core.archive_read import open_member, password_source_of, verify_archive
from backup_ops.core.config import BackupConfig, FileSource, SecretRef, parse_config
from backup_ops.core.errors import (
    ArchiveError,
    BackupError,
    FileSelectionError,
    UnsafeArchiveError,
    VerificationError,
)
from backup_ops.core.extract import safe_extract
from backup_ops.core.files import SelectedEntry, select_files
from backup_ops.core.manifest import MANIFEST_NAME, MemberInfo, build_manifest, manifest_bytes
from backup_ops.core.models import DumpResult, SkippedFile, StagedMember, TableStat
from tests.unit.test_files import run_unprivileged, world_reachable_tmp

PASSWORD = b"Zm9vYmFyYmF6cXV4IGEgaGlnaC1lbnRyb3B5IHBhc3N3b3Jk"
STRENGTH = {"aes128": 1, "aes192": 2, "aes256": 3, "none": None}


def words(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(500)]
    return " ".join(rng.choice(vocabulary) for _ in range(n)).encode()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "storage/logs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "public").mkdir()
    (root / ".env").write_bytes(b"APP_KEY=base64:abc\n")
    (root / "storage/logs/laravel.log").write_bytes(words(20_000))
    (root / "public/logo.PNG").write_bytes(os.urandom(3000))
    (root / "public/bundle.js.gz").write_bytes(os.urandom(2000))
    (root / "public/café.txt").write_bytes("ünïcode\n".encode())
    return root


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def make_dump(staging: Path, data: bytes = b"\x1f\x8b" + os.urandom(5000), db: str = "app") -> DumpResult:
    path = staging / f"postgresql-{db}.sql.gz"
    path.write_bytes(data)
    return DumpResult(
        conn_id=f"{db}_db", database=db, member_name=f"db-dumps/postgresql-{db}.sql.gz", staged_path=str(path),
        format="plain", compression="gzip:6", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        duration_s=0.1, snapshot_id="00000003-0000000A-1", server_version="16.4", pg_dump_version="16.4",
        tables=(TableStat("public", "users", 3, ("id", "email")),),
    )


def entries_of(root: Path) -> list[SelectedEntry]:
    return list(select_files(FileSource(include=(root,), relative_path=root.parent)))


def build(
    target: Path,
    *,
    dumps: list[DumpResult],
    files: Iterable[SelectedEntry | SkippedFile],
    password: bytes | None = PASSWORD,
    encryption: str = "aes256",
    level: int = 6,
    make_manifest: Callable[[list[MemberInfo]], dict[str, Any]] | None = None,
    fail_on: tuple[str, ...] = ("unreadable",),
    sync: bool = True,
) -> ArchiveResult:
    def default_manifest(members: list[MemberInfo]) -> dict[str, Any]:
        return build_manifest(
            backup_name="my-app", created_at=datetime(2026, 3, 1, 2, tzinfo=UTC), archive_name=target.name,
            run={"dag_id": "backup_daily"}, dumps=dumps, members=members, encryption=encryption,
            tool_versions={"pg_dump": "16.4"},
        )

    return build_archive(target, dumps=dumps, files=files, password=password, encryption=encryption,
                         compression_level=level, make_manifest=make_manifest or default_manifest, fail_on=fail_on,
                         sync=sync)


@pytest.fixture
def archive(source: Path, staging: Path) -> tuple[Path, ArchiveResult]:
    target = staging / "2026-03-01-02-00-00.zip"
    return target, build(target, dumps=[make_dump(staging)], files=entries_of(source))


@pytest.fixture
def plain_archive(source: Path, staging: Path) -> tuple[Path, ArchiveResult]:
    target = staging / "plain.zip"
    return target, build(target, dumps=[make_dump(staging)], files=entries_of(source), password=None,
                         encryption="none")


def infos(path: Path) -> dict[str, Any]:
    with pyzipper.AESZipFile(path) as zf:
        return {i.filename: i for i in zf.infolist()}


def data_offset(path: Path, name: str) -> int:
    """Where a member's data (after its local header) starts in the file."""
    info = infos(path)[name]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return int(info.header_offset) + 30 + name_len + extra_len


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def rewrite_plain(
    src: Path, dst: Path, transform: Callable[[list[tuple[zipfile.ZipInfo, bytes]]], list[tuple[Any, bytes]]],
    password: bytes | None = None,
) -> None:
    """Copy an archive into a plain stdlib zip, letting ``transform`` edit the (info, data) list."""
    with pyzipper.AESZipFile(src) as zf:
        if password:
            zf.setpassword(password)
        items = [(zipfile.ZipInfo(i.filename, i.date_time), zf.read(i.filename)) for i in zf.infolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate-name warnings are the point of some tests
        with zipfile.ZipFile(dst, "w") as out:
            for info, data in transform(items):
                out.writestr(info, data)


def tree_bytes(root: Path) -> dict[str, bytes | None]:
    result: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            result[os.path.normpath(os.path.join(rel, d)) + "/"] = None
        for f in filenames:
            result[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return result


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encryption", ["aes128", "aes192", "aes256", "none"])
def test_round_trip(encryption: str, source: Path, staging: Path, tmp_path: Path) -> None:
    password = None if encryption == "none" else PASSWORD
    dump = make_dump(staging)
    target = staging / "backup.zip"
    result = build(target, dumps=[dump], files=entries_of(source), password=password, encryption=encryption)

    raw = target.read_bytes()
    assert result.path == target
    assert (result.size, result.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    names = [m.name for m in result.members]
    assert names[0] == dump.member_name
    assert "app/empty/" in names and "app/public/café.txt" in names
    assert result.member_count == len(names) + 1
    assert result.file_count == 5
    assert result.file_bytes == sum(len(b) for b in tree_bytes(source).values() if b is not None)

    archive_infos = infos(target)
    assert list(archive_infos)[-1] == MANIFEST_NAME
    for name, info in archive_infos.items():
        expected = None if name.endswith("/") else STRENGTH[encryption]
        assert info.wz_aes_strength == expected, name

    verified = verify_archive(target, password=password, expected_sha256=result.sha256, expected_size=result.size)
    assert verified.members_checked == result.member_count
    assert verified.manifest_sha256 == result.manifest_sha256
    assert verified.manifest.encryption == encryption
    assert verified.manifest.databases[0].member == dump.member_name

    out = tmp_path / "restore"
    created = safe_extract(target, out, password=password)
    assert len(created) == result.member_count
    restored = tree_bytes(out)
    assert restored.pop(MANIFEST_NAME) is not None
    assert restored.pop("db-dumps/") is None
    assert restored.pop(dump.member_name) == Path(dump.staged_path).read_bytes()
    assert restored == {f"app/{k}" if k != "./" else "app/": v for k, v in tree_bytes(source).items()} | {"app/": None}


def test_archive_sha256_is_single_pass_and_correct_for_a_streamed_multi_chunk_member(
    source: Path, staging: Path
) -> None:
    big = source / "big.bin"
    big.write_bytes(os.urandom(3 * archive_module.MEMBER_PIECE + 123))
    result = build(staging / "b.zip", dumps=[], files=entries_of(source))
    assert result.sha256 == hashlib.sha256((staging / "b.zip").read_bytes()).hexdigest()
    member = next(m for m in result.members if m.name == "app/big.bin")
    assert member.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()


def test_archive_is_0600_and_never_overwritten(archive: tuple[Path, ArchiveResult], staging: Path) -> None:
    target, _ = archive
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    before = target.read_bytes()
    with pytest.raises(ArchiveError, match="already exists"):
        build(target, dumps=[], files=[])
    assert target.read_bytes() == before


def test_umask_cannot_widen_mode(staging: Path) -> None:
    old = os.umask(0)
    try:
        build(staging / "u.zip", dumps=[], files=[])
    finally:
        os.umask(old)
    assert stat.S_IMODE((staging / "u.zip").stat().st_mode) == 0o600


@pytest.mark.parametrize(("password", "encryption", "message"), [
    (None, "aes256", "no password was given"),
    (b"", "aes128", "no password was given"),
    (PASSWORD, "none", "encryption is 'none'"),
    (PASSWORD, "des", "must be one of"),
])
def test_inconsistent_encryption_settings_are_refused(
    password: bytes | None, encryption: str, message: str, staging: Path
) -> None:
    with pytest.raises(ArchiveError, match=message):
        build(staging / "x.zip", dumps=[], files=[], password=password, encryption=encryption)
    assert not (staging / "x.zip").exists()


@pytest.mark.parametrize("level", [-1, 10, True])
def test_compression_level_is_validated(level: Any, staging: Path) -> None:
    with pytest.raises(ArchiveError, match="compression_level"):
        build(staging / "x.zip", dumps=[], files=[], level=level)


# ---------------------------------------------------------------------------- passwords


def test_wrong_or_missing_password_is_a_clear_error(archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = archive
    with pytest.raises(ArchiveError) as info:
        verify_archive(target, password=b"wrong")
    assert str(info.value) == f"Wrong archive password for {target}: check backup.password in the config."
    with pytest.raises(ArchiveError) as info:
        verify_archive(target, password=None)
    assert str(info.value) == (f"Archive {target} is encrypted but no password was given: "
                               "set backup.password in the config.")
    with pytest.raises(ArchiveError, match="Wrong archive password"):
        safe_extract(target, tmp_path / "out", password=b"wrong")
    with pytest.raises(ArchiveError, match="Wrong archive password"), \
            open_member(target, "db-dumps/postgresql-app.sql.gz", b"wrong"):
        pass


def test_password_errors_name_where_the_password_came_from(archive: tuple[Path, ArchiveResult]) -> None:
    target, _ = archive
    source = "the environment variable RESTORE_PW (--password-env)"
    with pytest.raises(ArchiveError) as info:
        verify_archive(target, password=b"wrong", password_source=source)
    assert str(info.value) == f"Wrong archive password for {target}: check {source}."
    with pytest.raises(ArchiveError) as info:
        verify_archive(target, password=None, password_source=source)
    assert str(info.value) == f"Archive {target} is encrypted but no password was given: set {source}."
    with pytest.raises(ArchiveError) as info, \
            open_member(target, "db-dumps/postgresql-app.sql.gz", b"wrong", password_source=source):
        pass
    assert str(info.value) == f"Wrong archive password for {target}: check {source}."


@pytest.mark.parametrize(("ref", "phrase"), [
    (SecretRef("variable", "backup_archive_password"),
     "the Airflow variable backup_archive_password (backup.password in the config)"),
    (SecretRef("env", "ARCHIVE_PW"), "the worker's environment variable ARCHIVE_PW (backup.password in the config)"),
    (SecretRef("connection", "archive"),
     "the password of the Airflow connection archive (backup.password in the config)"),
    (None, "backup.password in the config"),
])
def test_password_source_of_a_config_reference(ref: SecretRef | None, phrase: str) -> None:
    assert password_source_of(ref) == phrase


# ---------------------------------------------------------------------------- compression


def test_stored_or_deflated_by_kind(archive: tuple[Path, ArchiveResult]) -> None:
    target, result = archive
    methods = {name: info.compress_type for name, info in infos(target).items()}
    assert methods["db-dumps/postgresql-app.sql.gz"] == pyzipper.ZIP_STORED
    assert methods["app/public/logo.PNG"] == pyzipper.ZIP_STORED
    assert methods["app/public/bundle.js.gz"] == pyzipper.ZIP_STORED
    assert methods["app/storage/logs/laravel.log"] == pyzipper.ZIP_DEFLATED
    assert methods["app/.env"] == pyzipper.ZIP_DEFLATED
    assert methods[MANIFEST_NAME] == pyzipper.ZIP_DEFLATED
    compressed = {m.name: m.compressed for m in result.members}
    assert compressed["app/storage/logs/laravel.log"] and not compressed["app/public/logo.PNG"]


def test_level_zero_stores_everything(source: Path, staging: Path) -> None:
    target = staging / "stored.zip"
    build(target, dumps=[make_dump(staging)], files=entries_of(source), level=0)
    assert {info.compress_type for info in infos(target).values()} == {pyzipper.ZIP_STORED}


def test_compression_level_is_applied(source: Path, staging: Path) -> None:
    fast = build(staging / "l1.zip", dumps=[], files=entries_of(source), level=1)
    best = build(staging / "l9.zip", dumps=[], files=entries_of(source), level=9)
    assert fast.size > best.size


@pytest.mark.parametrize(("name", "expected"), [
    ("a.gz", True), ("dir/backup.tar.gz", True), ("photo.JPG", True), ("x.webp", True), ("doc.docx", True),
    ("font.woff2", True), ("a.zst", True), ("notes.txt", False), ("dump.sql", False), (".gz", False),
    ("gz", False), ("dir.zip/file.txt", False), ("app.js", False),
])
def test_is_precompressed(name: str, expected: bool) -> None:
    assert is_precompressed(name) is expected


# ---------------------------------------------------------------------------- metadata


def test_mtime_mode_preserved_and_old_dates_clamped(source: Path, staging: Path) -> None:
    recent, old = source / ".env", source / "storage/logs/laravel.log"
    os.utime(recent, (1_700_000_000, 1_700_000_000))
    os.utime(old, (100, 100))
    os.chmod(recent, 0o640)
    target = staging / "t.zip"
    build(target, dumps=[], files=entries_of(source))
    archived = infos(target)
    assert archived["app/.env"].date_time == time.localtime(1_700_000_000)[:6]
    assert archived["app/.env"].external_attr >> 16 == stat.S_IFREG | 0o640
    assert archived["app/storage/logs/laravel.log"].date_time == (1980, 1, 1, 0, 0, 0)
    assert archived["app/empty/"].external_attr >> 16 & stat.S_IFDIR


# ---------------------------------------------------------------------------- verification


def test_flipped_byte_in_encrypted_member_fails_hmac(archive: tuple[Path, ArchiveResult]) -> None:
    target, _ = archive
    flip_byte(target, data_offset(target, "app/storage/logs/laravel.log") + 18 + 100)  # past salt + verifier
    with pytest.raises(VerificationError, match="laravel.log.*failed its integrity check"):
        verify_archive(target, password=PASSWORD)


def test_flipped_byte_in_plain_member_fails(plain_archive: tuple[Path, ArchiveResult]) -> None:
    target, _ = plain_archive
    flip_byte(target, data_offset(target, "db-dumps/postgresql-app.sql.gz") + 100)
    with pytest.raises(VerificationError, match="postgresql-app.sql.gz"):
        verify_archive(target, password=None)


def test_flipped_byte_fails_the_recorded_sha256(archive: tuple[Path, ArchiveResult]) -> None:
    target, result = archive
    flip_byte(target, result.size // 2)
    with pytest.raises(VerificationError, match="sha256 .* was recorded"):
        verify_archive(target, password=PASSWORD, expected_sha256=result.sha256)


def test_truncated_archive(archive: tuple[Path, ArchiveResult]) -> None:
    target, result = archive
    os.truncate(target, result.size - 40)
    with pytest.raises(VerificationError, match="truncated"):
        verify_archive(target, password=PASSWORD, expected_size=result.size)
    with pytest.raises(VerificationError, match="not a readable zip file"):
        verify_archive(target, password=PASSWORD)


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="does not exist"):
        verify_archive(tmp_path / "nope.zip", password=None)


def test_missing_member(plain_archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = plain_archive
    tampered = tmp_path / "t.zip"
    rewrite_plain(target, tampered, lambda items: [i for i in items if i[0].filename != "app/.env"])
    with pytest.raises(VerificationError, match="'app/.env' listed in the manifest is missing"):
        verify_archive(tampered, password=None)


def test_extra_member_fails_but_extra_directory_is_tolerated(
    plain_archive: tuple[Path, ArchiveResult], tmp_path: Path
) -> None:
    target, _ = plain_archive
    with_file, with_dir = tmp_path / "f.zip", tmp_path / "d.zip"
    rewrite_plain(target, with_file, lambda items: [*items, (zipfile.ZipInfo("app/implant.php"), b"<?php")])
    with pytest.raises(VerificationError, match="contains 'app/implant.php', which its manifest does not list"):
        verify_archive(with_file, password=None)
    rewrite_plain(target, with_dir, lambda items: [*items, (zipfile.ZipInfo("extra/"), b"")])
    verify_archive(with_dir, password=None)


def test_member_content_differs_from_manifest(plain_archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = plain_archive
    tampered = tmp_path / "t.zip"
    rewrite_plain(target, tampered, lambda items: [
        (info, b"APP_KEY=attacker\n" if info.filename == "app/.env" else data) for info, data in items])
    with pytest.raises(VerificationError, match="'app/.env' of archive .* does not match its manifest"):
        verify_archive(tampered, password=None)


def test_duplicate_member(plain_archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = plain_archive
    tampered = tmp_path / "t.zip"
    rewrite_plain(target, tampered, lambda items: [*items, (zipfile.ZipInfo("app/.env"), b"other")])
    with pytest.raises(VerificationError, match="contains 'app/.env' twice"):
        verify_archive(tampered, password=None)


def test_missing_or_malformed_manifest(plain_archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = plain_archive
    without, broken = tmp_path / "w.zip", tmp_path / "b.zip"
    rewrite_plain(target, without, lambda items: [i for i in items if i[0].filename != MANIFEST_NAME])
    with pytest.raises(VerificationError, match="has no manifest.json"):
        verify_archive(without, password=None)
    rewrite_plain(target, broken, lambda items: [
        (info, b'{"format_version": 99}' if info.filename == MANIFEST_NAME else data) for info, data in items])
    with pytest.raises(ArchiveError, match="format version 99"):
        verify_archive(broken, password=None)


def test_encryption_downgrade_is_detected(archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = archive
    plain = tmp_path / "plain.zip"
    rewrite_plain(target, plain, lambda items: items, password=PASSWORD)  # manifest still says aes256
    with pytest.raises(VerificationError, match="not encrypted the way the manifest says"):
        verify_archive(plain, password=PASSWORD)


# ---------------------------------------------------------------------------- failures leave nothing behind


def test_selection_error_mid_archive_removes_partial_file(source: Path, staging: Path) -> None:
    def failing() -> Iterator[SelectedEntry]:
        yield from entries_of(source)[:3]
        raise FileSelectionError("Directory /x is not readable by this process")

    target = staging / "partial.zip"
    with pytest.raises(FileSelectionError, match="not readable"):
        build(target, dumps=[make_dump(staging)], files=failing())
    assert not target.exists()


def test_interrupt_mid_archive_removes_partial_file_and_propagates(source: Path, staging: Path) -> None:
    def interrupted() -> Iterator[SelectedEntry]:
        yield from entries_of(source)[:2]
        raise KeyboardInterrupt

    target = staging / "partial.zip"
    with pytest.raises(KeyboardInterrupt):
        build(target, dumps=[], files=interrupted())
    assert not target.exists()


def test_read_error_mid_file_removes_partial_file(
    source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FailingStream(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError(errno.EIO, "Input/output error")
            return b"x" * 1000

    real_open = archive_source.ListedFileOpener.open

    def open_listed(self: Any, entry: SelectedEntry) -> Any:
        if entry.path.name == "laravel.log":
            return FailingStream(), os.stat(entry.path)
        return real_open(self, entry)

    monkeypatch.setattr(archive_source.ListedFileOpener, "open", open_listed)
    target = staging / "partial.zip"
    with pytest.raises(ArchiveError, match="laravel.log failed mid-way: Input/output error"):
        build(target, dumps=[make_dump(staging)], files=entries_of(source))
    assert not target.exists()


def test_changed_staged_dump_fails(source: Path, staging: Path) -> None:
    dump = make_dump(staging)
    Path(dump.staged_path).write_bytes(b"\x1f\x8b truncated")
    target = staging / "partial.zip"
    with pytest.raises(ArchiveError, match="changed after it was dumped"):
        build(target, dumps=[dump], files=entries_of(source))
    assert not target.exists()


def test_a_staged_dump_changed_in_place_is_caught_by_the_verification(source: Path, staging: Path) -> None:
    # Same size, other bytes: the build does not hash the dump again (the dump step did, as it wrote it);
    # the manifest carries that sha256, and decrypting the member at verification compares.
    dump = make_dump(staging)
    data = bytearray(Path(dump.staged_path).read_bytes())
    data[-1] ^= 0xFF
    Path(dump.staged_path).write_bytes(bytes(data))
    target = staging / "changed.zip"
    result = build(target, dumps=[dump], files=entries_of(source))
    with pytest.raises(VerificationError, match=rf"{re.escape(dump.member_name)}.*(sha256|manifest)"):
        verify_archive(target, password=PASSWORD, expected_sha256=result.sha256)


def with_globals(dump: DumpResult, staging: Path) -> DumpResult:
    """``dump`` with the roles and database settings the dump step stages beside it."""
    stem = Path(dump.staged_path).name.removesuffix(".sql.gz")
    extras = []
    for kind, suffix, data in (("roles", "roles.sql", b'CREATE ROLE "app_owner";\n' * 50),
                               ("database", "database.json", b'{"format_version": 1, "settings": []}\n')):
        path = staging / f"{stem}.{suffix}"
        path.write_bytes(data)
        extras.append(StagedMember(kind, f"db-dumps/{stem}.{suffix}", str(path), len(data),
                                   hashlib.sha256(data).hexdigest()))
    return DumpResult(**{**dump.__dict__, "extra_members": tuple(extras)})


def test_the_roles_and_settings_follow_their_dump_deflated_encrypted_and_listed(
    source: Path, staging: Path, tmp_path: Path
) -> None:
    dump = with_globals(make_dump(staging), staging)
    target = staging / "globals.zip"
    result = build(target, dumps=[dump], files=entries_of(source))

    roles, settings = dump.extra_members
    archive_infos = infos(target)
    assert [m.name for m in result.members][:3] == [dump.member_name, roles.member_name, settings.member_name]
    for member in (roles, settings):
        info = archive_infos[member.member_name]
        assert (info.compress_type, info.wz_aes_strength) == (pyzipper.ZIP_DEFLATED, 3)
    assert archive_infos[roles.member_name].compress_size < roles.size / 4  # 50 repeated lines deflate well
    verified = verify_archive(target, password=PASSWORD, expected_sha256=result.sha256)
    (db,) = verified.manifest.databases
    assert (db.roles_member, db.database_member) == (roles.member_name, settings.member_name)
    listed = verified.manifest.members_by_name()
    assert (listed[roles.member_name].size, listed[roles.member_name].sha256) == (roles.size, roles.sha256)
    assert verified.manifest.file_count == result.file_count == 5  # they are the database's, not files
    out = tmp_path / "restore"
    safe_extract(target, out, password=PASSWORD)
    for member in (roles, settings):
        assert (out / member.member_name).read_bytes() == Path(member.staged_path).read_bytes()


def test_roles_changed_after_the_dump_fail_the_archive(source: Path, staging: Path) -> None:
    dump = with_globals(make_dump(staging), staging)
    Path(dump.extra_members[0].staged_path).write_bytes(b'CREATE ROLE "someone_else";\n')
    target = staging / "partial.zip"
    with pytest.raises(ArchiveError, match=r"The staged roles file .*postgresql-app\.roles\.sql of database app "
                                           r"changed after it was dumped"):
        build(target, dumps=[dump], files=entries_of(source))
    assert not target.exists()


def test_missing_staged_dump_fails(staging: Path) -> None:
    dump = make_dump(staging)
    os.unlink(dump.staged_path)
    with pytest.raises(ArchiveError, match="Cannot read staged dump"):
        build(staging / "x.zip", dumps=[dump], files=[])
    assert not (staging / "x.zip").exists()


def test_manifest_that_disagrees_with_members_fails(source: Path, staging: Path) -> None:
    def lying(members: list[MemberInfo]) -> dict[str, Any]:
        forged = [MemberInfo(m.name, m.size + 1, m.sha256, m.compressed) if m.name == "app/.env" else m
                  for m in members]
        return build_manifest(backup_name="b", created_at=datetime.now(UTC), archive_name="x.zip", run=None,
                              dumps=[], members=forged, encryption="aes256", tool_versions={})

    with pytest.raises(ArchiveError, match="does not list exactly the members written"):
        build(staging / "x.zip", dumps=[], files=entries_of(source), make_manifest=lying)
    assert not (staging / "x.zip").exists()


def test_file_named_like_the_manifest_collides_clearly(source: Path, staging: Path) -> None:
    (source / MANIFEST_NAME).write_text("{}")
    entries = list(select_files(FileSource(include=(source,), relative_path=source)))
    with pytest.raises(ArchiveError, match="Two members would be named 'manifest.json'"):
        build(staging / "x.zip", dumps=[], files=entries)
    assert not (staging / "x.zip").exists()


def _fill_with_enospc(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallback when a tmpfs cannot be mounted: the archive's fd fails like a full disk after 64 KiB."""
    real_write = os.write
    budget = {"left": 64 * 1024}

    def write(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(target):
            if budget["left"] <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            data = bytes(data)[: budget["left"]]
            budget["left"] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.fixture
def tiny_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bool]]:
    """A 256 KiB tmpfs when we may mount one (root on a VM, as in CI); else a simulated full disk."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    try:
        yield mount, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_gives_the_staging_hint_and_leaves_nothing(
    tiny_disk: tuple[Path, bool], source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mount, mounted = tiny_disk
    target = mount / "backup.zip"
    if not mounted:
        _fill_with_enospc(target, monkeypatch)
    (source / "big.bin").write_bytes(os.urandom(1024 * 1024))
    expected = (f"No space left on device while writing archive {target} to staging directory {mount}: "
                "free space or point backup.staging_directory elsewhere.")
    with pytest.raises(ArchiveError) as info:
        build(target, dumps=[make_dump(staging)], files=entries_of(source))
    assert str(info.value) == expected
    assert not target.exists()
    assert list(mount.iterdir()) == []


def _cut_points(path: Path) -> list[tuple[str, int]]:
    """Byte offsets inside each part of a built archive: headers, data, data descriptors, central directory."""
    with pyzipper.AESZipFile(path) as zf:
        members, start_dir = zf.infolist(), zf.start_dir
    big = max(members, key=lambda i: i.compress_size)
    last_file = [i for i in members if not i.filename.endswith("/")][-2]  # the last file before the manifest
    manifest = members[-1]
    points = [("first byte", 0), (f"{big.filename} local header", big.header_offset + 10),
              (f"{big.filename} data", data_offset(path, big.filename) + big.compress_size // 2)]
    for info in (big, last_file, manifest):
        end_of_data = data_offset(path, info.filename) + info.compress_size
        points.append((f"{info.filename} data descriptor", end_of_data + 6))
    points += [(f"{manifest.filename} data", data_offset(path, manifest.filename) + 20),
               ("central directory", start_dir + 10), ("end of central directory", path.stat().st_size - 5)]
    return points


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_at_any_moment_of_the_build_names_the_staging_directory(
    code: int, source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stored member of several chunks: its small header is buffered, then flushed before a big direct write.
    dump = make_dump(staging, b"\x1f\x8b" + os.urandom(2 * archive_module.MEMBER_PIECE + 100))
    reference = build(staging / "reference.zip", dumps=[dump], files=entries_of(source))
    out = staging / "out"
    out.mkdir()
    target = out / "2026-03-01-02-00-00.zip"
    expected = (f"No space left on device while writing archive {target} to staging directory {out}: "
                "free space or point backup.staging_directory elsewhere.")
    real_write = os.write
    for where, cut in _cut_points(reference.path):
        budget = {"left": cut}

        def write(fd: int, data: Any, budget: dict[str, int] = budget) -> int:
            if os.readlink(f"/proc/self/fd/{fd}") == str(target):  # the disk fills up after ``cut`` bytes
                if budget["left"] <= 0:
                    raise OSError(code, os.strerror(code))
                data = bytes(data)[: budget["left"]]
                budget["left"] -= len(data)
            return real_write(fd, data)

        with monkeypatch.context() as patch:
            patch.setattr(os, "write", write)
            with pytest.raises(ArchiveError) as info:
                build(target, dumps=[dump], files=entries_of(source))
        assert str(info.value) == expected, where
        assert list(out.iterdir()) == [], where


def test_an_archive_built_without_sync_is_made_durable_or_removed(
    source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive step fsyncs while it verifies (make_durable); space the disk only refuses at writeback
    (delayed allocation) removes the archive with the same sentence as a full disk during the build."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    dump = make_dump(staging)
    good = staging / "good.zip"
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        build(good, dumps=[dump], files=entries_of(source), sync=False)
        assert synced == []  # left to the caller
        make_durable(good)
    assert synced == [str(good), str(staging)]  # the file, then its directory entry
    assert verify_archive(good, password=PASSWORD).members_checked > 1

    target = staging / "late.zip"
    build(target, dumps=[dump], files=entries_of(source), sync=False)

    def refuse(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", refuse)
        with pytest.raises(ArchiveError) as info:
            make_durable(target)
    assert str(info.value) == (f"No space left on device while writing archive {target} to staging directory "
                               f"{staging}: free space or point backup.staging_directory elsewhere.")
    assert not target.exists()


# ---------------------------------------------------------------------------- files that move under us


class _Interfering(io.RawIOBase):
    """A source stream that lets another "process" act on the file after every read."""

    def __init__(self, stream: Any, action: Callable[[], None]) -> None:
        super().__init__()
        self._stream = stream
        self._action = action

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self._stream.read(size)
        self._action()
        return chunk

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def close(self) -> None:
        self._stream.close()
        super().close()


def _while_reading(monkeypatch: pytest.MonkeyPatch, victim: Path, action: Callable[[], None]) -> None:
    """Run ``action`` (another process touching the file) after each chunk the archive reads from ``victim``."""
    real_open = archive_source.ListedFileOpener.open

    def open_listed(self: Any, entry: SelectedEntry) -> Any:
        opened = real_open(self, entry)
        if entry.path == victim and not isinstance(opened, SkippedFile):
            stream, st = opened
            return _Interfering(stream, action), st
        return opened

    monkeypatch.setattr(archive_source.ListedFileOpener, "open", open_listed)


def skips(result: ArchiveResult) -> list[tuple[str, str]]:
    return [(s.name, s.reason) for s in result.skipped]


def manifest_skips(target: Path) -> list[tuple[str, str, str]]:
    return [(s.name, s.reason, s.detail) for s in verify_archive(target, password=PASSWORD).manifest.skipped]


def test_file_growing_while_read_holds_the_size_seen_at_open(
    source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log_file = source / "storage/logs/laravel.log"
    original = os.urandom(2 * archive_module.MEMBER_PIECE + 10)
    log_file.write_bytes(original)
    entries = entries_of(source)

    def append() -> None:  # a writer faster than us: without a bound the read would never end
        with open(log_file, "ab") as f:
            f.write(b"late line\n" * 1000)

    _while_reading(monkeypatch, log_file, append)
    target = staging / "grow.zip"
    with caplog.at_level(logging.WARNING, logger="backup_ops.core.archive"):
        result = build(target, dumps=[], files=entries)
    member = next(m for m in result.members if m.name == "app/storage/logs/laravel.log")
    assert (member.size, member.sha256) == (len(original), hashlib.sha256(original).hexdigest())
    assert any("changed while it was being archived" in m for m in caplog.messages)
    verify_archive(target, password=PASSWORD, expected_sha256=result.sha256)
    # Archived as read, and the manifest says the copy may be torn.
    assert skips(result) == [("app/storage/logs/laravel.log", "changed")]
    ((_, _, detail),) = manifest_skips(target)
    assert f"the archive holds the {len(original)} bytes read" in detail


def test_file_shrinking_while_read_records_the_bytes_written(
    source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log_file = source / "storage/logs/laravel.log"
    original = os.urandom(3 * archive_module.MEMBER_PIECE)
    log_file.write_bytes(original)
    entries = entries_of(source)
    _while_reading(monkeypatch, log_file, lambda: os.truncate(log_file, archive_module.MEMBER_PIECE))
    target = staging / "shrink.zip"
    with caplog.at_level(logging.WARNING, logger="backup_ops.core.archive"):
        result = build(target, dumps=[], files=entries)
    member = next(m for m in result.members if m.name == "app/storage/logs/laravel.log")
    expected = original[: archive_module.MEMBER_PIECE]
    assert (member.size, member.sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert any(f"the archive holds the {archive_module.MEMBER_PIECE} bytes read" in m for m in caplog.messages)
    verify_archive(target, password=PASSWORD, expected_sha256=result.sha256)
    assert skips(result) == [("app/storage/logs/laravel.log", "changed")]


def test_file_changed_while_read_fails_the_run_when_fail_on_lists_changed(
    source: Path, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = source / "storage/logs/laravel.log"
    entries = entries_of(source)
    _while_reading(monkeypatch, log_file, lambda: log_file.write_bytes(b"rotated\n"))
    target = staging / "changed.zip"
    with pytest.raises(FileSelectionError) as info:
        build(target, dumps=[], files=entries, fail_on=("changed",))
    message = str(info.value)
    assert message.startswith(f"File {log_file} changed while it was being archived")
    assert "backup.source.files.fail_on lists 'changed'" in message
    assert not target.exists()


def test_file_removed_after_selection_is_skipped_and_recorded(source: Path, staging: Path) -> None:
    entries = entries_of(source)
    (source / ".env").unlink()
    target = staging / "gone.zip"
    result = build(target, dumps=[], files=entries)
    assert skips(result) == [("app/.env", "vanished")]
    assert result.skipped[0].path == str(source / ".env")
    assert result.skipped_counts == {"vanished": 1}
    assert "app/.env" not in {m.name for m in result.members}
    assert manifest_skips(target) == [("app/.env", "vanished", "was removed after it was listed")]


def test_file_replaced_by_fifo_after_selection_is_skipped_without_hanging(source: Path, staging: Path) -> None:
    entries = entries_of(source)
    (source / ".env").unlink()
    os.mkfifo(source / ".env")
    target = staging / "fifo.zip"
    result = build(target, dumps=[], files=entries)
    assert skips(result) == [("app/.env", "replaced")]
    assert manifest_skips(target) == [("app/.env", "replaced", "is now a FIFO")]


def test_file_swapped_for_a_symbolic_link_is_not_followed(source: Path, staging: Path, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$secret-hash:19000:0:99999:7:::\n")
    entries = entries_of(source)
    (source / ".env").unlink()
    (source / ".env").symlink_to(secret)  # an application user swaps a file it owns for a link
    target = staging / "swap.zip"
    result = build(target, dumps=[], files=entries)
    assert "app/.env" not in {m.name for m in result.members}
    assert manifest_skips(target) == [("app/.env", "replaced", "was replaced by a symbolic link after it was listed")]
    out = tmp_path / "out"
    safe_extract(target, out, password=PASSWORD)
    assert not any(b"secret-hash" in (data or b"") for data in tree_bytes(out).values())


def test_parent_directory_swapped_for_a_link_is_not_followed(source: Path, staging: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "laravel.log").write_bytes(b"not the listed file\n")
    entries = entries_of(source)
    logs = source / "storage/logs"
    logs.rename(tmp_path / "old-logs")
    logs.symlink_to(elsewhere)  # same name below, a different directory
    target = staging / "parent.zip"
    result = build(target, dumps=[], files=entries)
    assert skips(result) == [("app/storage/logs/laravel.log", "replaced")]
    assert "app/storage/logs/laravel.log" not in {m.name for m in result.members}
    (skip,) = manifest_skips(target)
    assert skip[2] == "is in a directory that was replaced after it was listed"


def test_file_replaced_by_another_file_is_not_archived_in_its_place(source: Path, staging: Path) -> None:
    entries = entries_of(source)
    (source / "intruder").write_bytes(b"APP_KEY=attacker\n")
    os.replace(source / "intruder", source / ".env")  # same name, another inode
    target = staging / "replaced.zip"
    result = build(target, dumps=[], files=entries)
    assert skips(result) == [("app/.env", "replaced")]
    assert manifest_skips(target)[0][2] == "was replaced by another file after it was listed"


def test_file_turned_into_a_directory_is_skipped(source: Path, staging: Path) -> None:
    entries = entries_of(source)
    (source / ".env").unlink()
    (source / ".env").mkdir()
    result = build(staging / "dir.zip", dumps=[], files=entries)
    assert [(s.name, s.reason, s.detail) for s in result.skipped] == [("app/.env", "replaced", "is now a directory")]


def test_skipped_reason_in_fail_on_fails_the_build_and_removes_the_partial_file(source: Path, staging: Path) -> None:
    entries = entries_of(source)
    (source / ".env").unlink()
    target = staging / "strict.zip"
    with pytest.raises(FileSelectionError) as info:
        build(target, dumps=[make_dump(staging)], files=entries, fail_on=("vanished", "unreadable"))
    assert str(info.value).startswith(f"File {source / '.env'} was removed after it was listed, and "
                                      "backup.source.files.fail_on lists 'vanished': ")
    assert "or remove 'vanished' from backup.source.files.fail_on" in str(info.value)
    assert not target.exists()


def test_skips_found_at_listing_time_reach_the_manifest(source: Path, staging: Path) -> None:
    os.mkfifo(source / "queue.fifo")
    stream = list(select_files(FileSource(include=(source,), relative_path=source.parent)))
    assert [(s.name, s.reason) for s in stream if isinstance(s, SkippedFile)] == [("app/queue.fifo", "fifo")]
    target = staging / "listed.zip"
    result = build(target, dumps=[], files=stream)
    assert skips(result) == [("app/queue.fifo", "fifo")]
    assert manifest_skips(target) == [("app/queue.fifo", "fifo", "is a FIFO")]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    with world_reachable_tmp() as path:
        yield path


def _build_as_nobody(shared_tmp: Path, fail_on: tuple[str, ...]) -> dict[str, Any]:
    """List as root, then build as nobody: a listed file has become unreadable (EACCES at open)."""
    source = shared_tmp / "app"
    source.mkdir(mode=0o755)
    (source / "a.txt").write_bytes(b"a\n")
    (source / ".env").write_bytes(b"APP_KEY=secret\n")
    entries = entries_of(source)
    (source / ".env").chmod(0o600)  # root's file: nobody cannot open it
    out = shared_tmp / "staging"
    out.mkdir()
    out.chmod(0o777)

    def run() -> dict[str, Any]:
        result = build(out / "x.zip", dumps=[], files=entries, fail_on=fail_on)
        return {"skipped": [[s.name, s.reason, s.detail] for s in result.skipped],
                "members": [m.name for m in result.members]}

    outcome = run_unprivileged(run)
    outcome["exists"] = (out / "x.zip").exists()
    return outcome


def test_file_unreadable_at_archive_time_fails_by_default(shared_tmp: Path) -> None:
    outcome = _build_as_nobody(shared_tmp, ("unreadable",))
    assert outcome.get("error") == "FileSelectionError", outcome
    assert outcome["message"].startswith(f"File {shared_tmp / 'app/.env'} is not readable by this process (uid "
                                         "65534), and backup.source.files.fail_on lists 'unreadable': ")
    assert not outcome["exists"]


def test_file_unreadable_at_archive_time_is_recorded_when_allowed(shared_tmp: Path) -> None:
    outcome = _build_as_nobody(shared_tmp, ())
    assert outcome["value"]["skipped"] == [["app/.env", "unreadable", "is not readable by this process (uid 65534)"]]
    assert "app/.env" not in outcome["value"]["members"] and "app/a.txt" in outcome["value"]["members"]
    assert outcome["exists"]


def test_links_followed_on_purpose_are_still_archived(source: Path, staging: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "u1.jpg").write_bytes(b"jpg")
    (source / "public/uploads").symlink_to(shared)  # follow_links: a linked directory
    (tmp_path / "current.env").symlink_to(source / ".env")  # an include that is itself a link
    entries = list(select_files(FileSource(include=(source, tmp_path / "current.env"), relative_path=tmp_path,
                                           follow_links=True)))
    result = build(staging / "links.zip", dumps=[], files=entries)
    names = {m.name for m in result.members}
    assert {"app/public/uploads/u1.jpg", "current.env"} <= names
    assert result.skipped == ()


def test_file_in_a_search_only_directory_is_archived(shared_tmp: Path) -> None:
    locked = shared_tmp / "etc-app"
    locked.mkdir()
    (locked / "app.conf").write_bytes(b"key=value\n")
    locked.chmod(0o711)  # nobody may reach the file but not list the directory
    out = shared_tmp / "staging"
    out.mkdir()
    out.chmod(0o777)

    def run() -> dict[str, Any]:
        entries = list(select_files(FileSource(include=(locked / "app.conf",), relative_path=shared_tmp)))
        result = build(out / "x.zip", dumps=[], files=entries)
        return {"members": [m.name for m in result.members], "skipped": [s.name for s in result.skipped]}

    outcome = run_unprivileged(run)
    assert outcome.get("value") == {"members": ["etc-app/app.conf"], "skipped": []}, outcome


# ---------------------------------------------------------------------------- the build_archive step

PASSWORD_ENV = "BACKUP_OPS_TEST_ARCHIVE_PASSWORD"
RUN = {"dag_id": "backup_daily", "run_id": "manual__2026-03-01T02:00:00+00:00"}


@pytest.fixture
def step_plan(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[BackupConfig, dict[str, Any]]:
    """A config and ``plan`` result for the steps, as ``backup_daily`` passes them (password from the env)."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD.decode())
    config = parse_config({"backup": {
        "name": "my-app",
        "source": {"files": {"include": [str(source)], "relative_path": str(source.parent)}},
        "destination": {"destinations": [{"name": "local", "type": "local", "path": str(tmp_path / "backups")}]},
        "staging_directory": str(tmp_path / "staging-root"),
        "password": {"env": PASSWORD_ENV},
        "encryption": "aes256",
    }})
    staging_dir = prepare_staging(config, RUN["dag_id"], RUN["run_id"])
    return config, {"staging_dir": staging_dir, "archive_name": "2026-03-01-02-00-00.zip",
                    "created_at": "2026-03-01T02:00:00+00:00", "databases": [], "include_files": True,
                    "destinations": ["local"]}


def test_build_archive_step_can_be_retried_after_a_failed_or_killed_attempt(
    step_plan: tuple[BackupConfig, dict[str, Any]],
) -> None:
    config, plan_result = step_plan
    staging_dir = Path(plan_result["staging_dir"])
    files = steps.collect_files(config, str(staging_dir), True)
    first = steps.build_archive(config, plan_result, [], files, RUN)
    # A retry after the attempt failed verification: the archive it built is still there.
    second = steps.build_archive(config, plan_result, [], files, RUN)
    assert second["path"] == first["path"]
    verify_archive(Path(second["path"]), password=PASSWORD, expected_sha256=second["sha256"],
                   expected_size=second["size"])
    # A retry after the worker was killed mid-write: a partial zip is left behind.
    Path(second["path"]).write_bytes(b"PK\x03\x04 partial")
    third = steps.build_archive(config, plan_result, [], files, RUN)
    verify_archive(Path(third["path"]), password=PASSWORD, expected_sha256=third["sha256"],
                   expected_size=third["size"])
    assert sorted(p.name for p in staging_dir.iterdir()) == ["2026-03-01-02-00-00.zip", steps.FILE_LISTING]


def test_build_archive_step_removes_nothing_outside_its_run_folder(
    step_plan: tuple[BackupConfig, dict[str, Any]], tmp_path: Path
) -> None:
    config, plan_result = step_plan
    files = steps.collect_files(config, plan_result["staging_dir"], True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / plan_result["archive_name"]
    precious.write_bytes(b"not this run's archive")
    with pytest.raises(BackupError, match="not this run's staging folder"):
        steps.build_archive(config, {**plan_result, "staging_dir": str(elsewhere)}, [], files, RUN)
    assert precious.read_bytes() == b"not this run's archive"


def test_build_archive_step_reports_every_skipped_file(
    step_plan: tuple[BackupConfig, dict[str, Any]], source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, plan_result = step_plan
    os.mkfifo(source / "queue.fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(source / "app.sock"))
    with open(os.path.join(os.fsencode(source), b"caf\xe9.txt"), "wb") as f:  # a Latin-1 name
        f.write(b"uploaded on an old system")
    try:
        with caplog.at_level(logging.INFO, logger="backup_ops"):
            files = steps.collect_files(config, plan_result["staging_dir"], True)
    finally:
        sock.close()
    assert files["skipped"] == {"bad_name": 1, "fifo": 1, "socket": 1}
    # Between the two tasks: one file vanishes, one is swapped for a link to a file outside the tree.
    (source / ".env").unlink()
    (source / "public/logo.PNG").unlink()
    (source / "public/logo.PNG").symlink_to("/etc/passwd")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="backup_ops"):
        result = steps.build_archive(config, plan_result, [], files, RUN)
    assert result["skipped"] == {"bad_name": 1, "fifo": 1, "replaced": 1, "socket": 1, "vanished": 1}
    built = next(m for m in caplog.messages if m.startswith("Built "))
    assert "5 files skipped (1 bad_name, 1 fifo, 1 replaced, 1 socket, 1 vanished)" in built
    manifest = verify_archive(Path(result["path"]), password=PASSWORD).manifest
    assert sorted((s.name, s.reason) for s in manifest.skipped) == [
        ("app/.env", "vanished"), ("app/app.sock", "socket"), ("app/caf\\xe9.txt", "bad_name"),
        ("app/public/logo.PNG", "replaced"), ("app/queue.fifo", "fifo"),
    ]
    assert "app/public/logo.PNG" not in {m.name for m in manifest.members}


# ---------------------------------------------------------------------------- streaming a member


def test_open_member_streams_a_dump(archive: tuple[Path, ArchiveResult], staging: Path) -> None:
    target, _ = archive
    expected = (staging / "postgresql-app.sql.gz").read_bytes()
    with open_member(target, "db-dumps/postgresql-app.sql.gz", PASSWORD) as stream:
        assert stream.read(10) == expected[:10]
        assert stream.read() == expected[10:]
    with open_member(target, "db-dumps/postgresql-app.sql.gz", PASSWORD) as stream:
        buffer = bytearray(100)
        assert stream.readinto(buffer) == 100 and bytes(buffer) == expected[:100]
    with pytest.raises(ArchiveError, match="no member named 'nope'"), open_member(target, "nope", PASSWORD):
        pass


def test_open_member_reports_corruption_while_reading(archive: tuple[Path, ArchiveResult]) -> None:
    target, _ = archive
    flip_byte(target, data_offset(target, "db-dumps/postgresql-app.sql.gz") + 18 + 10)
    with pytest.raises(VerificationError, match="failed its integrity check"), \
            open_member(target, "db-dumps/postgresql-app.sql.gz", PASSWORD) as stream:
        while stream.read(4096):
            pass


# ---------------------------------------------------------------------------- safe extraction


def hostile_zip(path: Path, entries: list[tuple[str, bytes, int | None]]) -> Path:
    """A plain zip with (name, data, unix mode or None) entries, written the way an attacker would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as zf:
            for name, data, mode in entries:
                info = zipfile.ZipInfo(name)
                if mode is not None:
                    info.external_attr = mode << 16
                zf.writestr(info, data)
    return path


REGULAR = stat.S_IFREG | 0o644
MALICIOUS: list[tuple[str, list[tuple[str, bytes, int | None]], str, str]] = [
    ("absolute", [("/tmp/evil", b"x", None)], "/tmp/evil", "an absolute path"),
    ("dotdot", [("../evil", b"x", None)], "../evil", "path traversal"),
    ("nested dotdot", [("ok/../../evil", b"x", None)], "ok/../../evil", "path traversal"),
    ("backslash dotdot", [("..\\..\\evil", b"x", None)], "..\\\\..\\\\evil", "backslash used as separator"),
    ("backslash absolute", [("\\windows\\evil", b"x", None)], "windows", "backslash used as separator"),
    ("drive letter", [("C:/evil", b"x", None)], "C:/evil", "a drive letter"),
    ("drive letter backslash", [("C:\\evil", b"x", None)], "C:", "a drive letter"),
    ("symlink", [("link", b"/etc/passwd", stat.S_IFLNK | 0o777)], "link", "a symbolic link"),
    ("symlink dir then file through it", [("d", b"/etc", stat.S_IFLNK | 0o777), ("d/passwd", b"x", REGULAR)],
     "'d'", "a symbolic link"),
    ("char device", [("dev", b"", stat.S_IFCHR | 0o600)], "dev", "a character device node"),
    ("block device", [("blk", b"", stat.S_IFBLK | 0o600)], "blk", "a block device node"),
    ("fifo", [("pipe", b"", stat.S_IFIFO | 0o600)], "pipe", "a FIFO"),
    ("socket", [("sock", b"", stat.S_IFSOCK | 0o600)], "sock", "a socket"),
    ("duplicate", [("a.txt", b"1", None), ("a.txt", b"2", None)], "a.txt", "twice"),
    ("file then dir", [("a", b"1", None), ("a/b", b"2", None)], "a/b", "needs 'a' to be a directory"),
    ("dir then file", [("a/b", b"2", None), ("a", b"1", None)], "'a'", "both a file and a directory"),
    ("empty component", [("a//b", b"1", None)], "a//b", "empty or '.' path component"),
    ("directory with data", [("d/", b"data", None)], "d/", "a directory entry with content"),
]


@pytest.mark.parametrize(("entries", "member", "threat"), [(e, m, t) for _, e, m, t in MALICIOUS],
                         ids=[i for i, _, _, _ in MALICIOUS])
def test_safe_extract_refuses(
    entries: list[tuple[str, bytes, int | None]], member: str, threat: str, tmp_path: Path
) -> None:
    bad = hostile_zip(tmp_path / "bad.zip", [("innocent.txt", b"hello", None), *entries])
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(bad, out, password=None)
    message = str(info.value)
    assert member in message and threat in message, message
    assert list(out.iterdir()) == []  # refused before anything was written
    assert not (tmp_path / "evil").exists()


def test_safe_extract_refuses_nul_byte_names(tmp_path: Path) -> None:
    path = hostile_zip(tmp_path / "nul.zip", [("evilX.txt", b"x", None)])
    path.write_bytes(path.read_bytes().replace(b"evilX.txt", b"evil\x00.txt"))
    with pytest.raises(UnsafeArchiveError, match="NUL byte"):
        safe_extract(path, tmp_path / "out", password=None)


def test_safe_extract_refuses_a_non_empty_target(archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = archive
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(UnsafeArchiveError, match="is not empty"):
        safe_extract(target, out, password=PASSWORD)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_safe_extract_selected_members_only(archive: tuple[Path, ArchiveResult], tmp_path: Path) -> None:
    target, _ = archive
    out = tmp_path / "out"
    created = safe_extract(target, out, password=PASSWORD, members=["app/.env"])
    assert created == [out / "app" / ".env"]
    assert (out / "app/.env").read_bytes() == b"APP_KEY=base64:abc\n"
    assert stat.S_IMODE((out / "app/.env").stat().st_mode) == 0o600
    with pytest.raises(ArchiveError, match="no member named 'app/missing'"):
        safe_extract(target, tmp_path / "out2", password=PASSWORD, members=["app/missing"])


def test_safe_extract_size_cap(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * 5_000_000)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(UnsafeArchiveError, match="more than the 1000000 allowed"):
        safe_extract(bomb, tmp_path / "out", password=None, max_total_bytes=1_000_000)
    assert list((tmp_path / "out").iterdir()) == []


def test_safe_extract_corrupt_member_leaves_no_partial_file(
    plain_archive: tuple[Path, ArchiveResult], tmp_path: Path
) -> None:
    target, _ = plain_archive
    flip_byte(target, data_offset(target, "db-dumps/postgresql-app.sql.gz") + 100)
    out = tmp_path / "out"
    with pytest.raises(VerificationError):
        safe_extract(target, out, password=None)
    assert not (out / "db-dumps/postgresql-app.sql.gz").exists()


def test_manifest_bytes_in_archive_match_result(archive: tuple[Path, ArchiveResult]) -> None:
    target, result = archive
    with open_member(target, MANIFEST_NAME, PASSWORD) as stream:
        data = stream.read()
    assert hashlib.sha256(data).hexdigest() == result.manifest_sha256
    assert data == manifest_bytes(__import__("json").loads(data))  # stored in its deterministic form
    assert PASSWORD not in data
