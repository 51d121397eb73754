"""Dumps encrypted as they were dumped (core.sealed_member), copied into the archive as they are."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from backup_ops.core.archive_read import open_member, verify_archive
from backup_ops.core.errors import ArchiveError
from backup_ops.core.models import DumpResult
from backup_ops.core.sealed_member import MemberSealer, Sealing, password_matches, sealed_overhead
from tests.unit.test_archive import PASSWORD, build, data_offset, flip_byte, make_dump


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def sealed_dump(staging: Path, data: bytes, *, password: bytes = PASSWORD, nbits: int = 256,
                pieces: int = 3) -> DumpResult:
    sealer = MemberSealer(password, nbits)
    step = max(1, len(data) // pieces)
    body = b"".join(sealer.seal(data[i:i + step]) for i in range(0, len(data), step))
    path = staging / "postgresql-app.sql.gz.aes"
    path.write_bytes(sealer.header + body + sealer.trailer())
    return dataclasses.replace(make_dump(staging, data), staged_path=str(path), staged_encryption=f"aes{nbits}")


@pytest.mark.parametrize("nbits", [128, 192, 256])
def test_a_sealed_dump_is_copied_into_its_member_and_verifies(staging: Path, nbits: int) -> None:
    data = b"\x1f\x8b" + os.urandom(3 * 1024 * 1024 + 5)  # several chunks, not a multiple of the AES block
    dump = sealed_dump(staging, data, nbits=nbits)
    assert Path(dump.staged_path).stat().st_size == len(data) + sealed_overhead(nbits)
    assert data[:1000] not in Path(dump.staged_path).read_bytes()  # never in the clear on the staging disk
    target = staging / "a.zip"
    result = build(target, dumps=[dump], files=[], encryption=f"aes{nbits}")
    checked = verify_archive(target, password=PASSWORD, expected_sha256=result.sha256, expected_size=result.size)
    assert checked.manifest.members_by_name()[dump.member_name].sha256 == hashlib.sha256(data).hexdigest()
    with open_member(target, dump.member_name, PASSWORD) as member:
        assert member.read() == data
    # The member's data is the staged file, byte for byte, behind its local header.
    offset = data_offset(target, dump.member_name)
    assert target.read_bytes()[offset:offset + len(data) + sealed_overhead(nbits)] == \
        Path(dump.staged_path).read_bytes()


@pytest.mark.parametrize("where", ["ciphertext", "authentication code"])
def test_a_byte_changed_in_the_sealed_file_is_refused_as_it_is_copied(staging: Path, where: str) -> None:
    """The archive step's own verification does not recompute codes: a sealed member's is checked as it is copied."""
    dump = sealed_dump(staging, b"\x1f\x8b" + os.urandom(2_000_000))  # past SideDigest's first MiB
    staged = Path(dump.staged_path)
    flip_byte(staged, 5_000 if where == "ciphertext" else staged.stat().st_size - 3)
    target = staging / "a.zip"
    with pytest.raises(ArchiveError) as info:
        build(target, dumps=[dump], files=[])
    assert str(info.value) == (f"The staged dump {staged} of database app changed after it was dumped: its "
                               "authentication code does not match its bytes; run the backup again.")
    assert not target.exists()


def test_a_sealed_dump_of_another_size_or_password_or_key_size_is_refused(staging: Path) -> None:
    data = b"\x1f\x8b" + os.urandom(10_000)
    dump = sealed_dump(staging, data)
    with pytest.raises(ArchiveError, match="changed after it was dumped: expected"):
        build(staging / "a.zip", dumps=[dataclasses.replace(dump, size=len(data) - 1)], files=[])
    with pytest.raises(ArchiveError, match="another password than the archive's"):
        build(staging / "b.zip", dumps=[dump], files=[], password=b"another password")
    with pytest.raises(ArchiveError, match="encrypted with aes256 as it was dumped, but the archive is aes128"):
        build(staging / "c.zip", dumps=[dump], files=[], encryption="aes128")
    with pytest.raises(ArchiveError, match="but the archive is not encrypted"):
        build(staging / "d.zip", dumps=[dump], files=[], password=None, encryption="none")
    assert not any(staging.glob("*.zip"))  # no partial archive left behind


def test_password_matches_and_sealing_refuses_bad_settings() -> None:
    sealer = MemberSealer(PASSWORD, 192)
    assert password_matches(sealer.header, PASSWORD, 192)
    assert not password_matches(sealer.header, b"other", 192)
    assert not password_matches(sealer.header[:-1], PASSWORD, 192)
    with pytest.raises(ValueError):
        Sealing(b"", 256)
    with pytest.raises(ValueError):
        Sealing(PASSWORD, 512)
    assert PASSWORD not in repr(Sealing(PASSWORD, 256)).encode()


def test_a_sealed_dump_cut_while_it_is_copied_is_named_and_leaves_no_archive(staging: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from backup_ops.core import archive as archive_module

    dump = sealed_dump(staging, b"\x1f\x8b" + os.urandom(600_000))
    real_read = archive_module._read_exactly
    calls = {"n": 0}

    def cut_after_two_pieces(src, size, what):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:  # header, two pieces, then the stream ends
            raise ArchiveError(f"The {what} changed after it was dumped: it ends early; run the backup again.")
        return real_read(src, size, what)

    monkeypatch.setattr(archive_module, "_read_exactly", cut_after_two_pieces)
    with pytest.raises(ArchiveError, match="ends early") as raised:
        build(staging / "a.zip", dumps=[dump], files=[])
    assert "authentication code" not in str(raised.value)
    assert not (staging / "a.zip").exists()
