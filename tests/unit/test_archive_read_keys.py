"""Reading archives with keys derived ahead: pyzipper's keys, today's error sentences, no thread left running."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import pyzipper
from pyzipper.zipfile_aes import AESZipDecrypter

from backup_ops.core import aes_keys
from backup_ops.core.aes_keys import SALT_BYTES, key_pool_zip_file, prederived_decrypter
from backup_ops.core.archive import ArchiveResult
from backup_ops.core.archive_read import verify_archive
from backup_ops.core.errors import ArchiveError, VerificationError
from backup_ops.core.extract import safe_extract
from backup_ops.core.hashed_writer import SideDigest
from tests.unit.test_aes_keys import key_threads, reference_key, salts
from tests.unit.test_archive import PASSWORD, build, data_offset, entries_of, flip_byte

MEMBERS = 120


@pytest.fixture
def many(tmp_path: Path) -> tuple[Path, ArchiveResult, Path]:
    """An archive of MEMBERS small uploads (plus its manifest), written by build_archive."""
    root = tmp_path / "uploads"
    for i in range(MEMBERS):
        folder = root / f"{i // 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice-{i}.pdf").write_bytes(os.urandom(100 + 37 * i) + b"invoice %d\n" % i * 20)
    target = tmp_path / "many.zip"
    return target, build(target, dumps=[], files=entries_of(root)), root


def pyzipper_archive(members: dict[str, bytes], nbits: int) -> bytes:
    """An archive written by pyzipper's own writer (its own salts and key derivation)."""
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES,
                             encryption_kwargs={"nbits": nbits}) as zf:
        zf.setpassword(PASSWORD)
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def derivations(many: tuple[Path, ArchiveResult, Path], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each key derivation of the reader ran on (from after ``many`` was written)."""
    threads: list[str] = []
    derive = aes_keys.derive_key_for_salt

    def recording(password: bytes, salt: bytes, nbits: int) -> aes_keys.DerivedKey:
        threads.append(threading.current_thread().name)
        return derive(password, salt, nbits)

    monkeypatch.setattr(aes_keys, "derive_key_for_salt", recording)
    return threads


@pytest.mark.parametrize("nbits", [128, 192, 256])
def test_keys_derived_ahead_are_pyzippers_keys(nbits: int, tmp_path: Path) -> None:
    members = {f"uploads/{i}.txt": b"line %d\n" % i * (i + 1) for i in range(12)}
    path = tmp_path / "a.zip"
    path.write_bytes(pyzipper_archive(members, nbits))
    member_salts = salts(path.read_bytes(), nbits)
    length = 2 * nbits // 8 + 2
    with key_pool_zip_file(path, "r") as zf:
        zf.setpassword(PASSWORD)
        infos = zf.infolist()
        zf.derive_keys_ahead(infos)
        assert key_threads()
        for info, salt in zip(infos, member_salts, strict=True):
            assert zf.keys_ahead.material_for(info.header_offset, PASSWORD, salt) == reference_key(salt, length)
    assert not key_threads()


def test_keys_ahead_are_refused_for_another_salt_or_password(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(pyzipper_archive({"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"}, 256))
    first, second, third = salts(path.read_bytes(), 256)
    with key_pool_zip_file(path, "r") as zf:
        zf.setpassword(PASSWORD)
        a, b, c = zf.infolist()
        zf.derive_keys_ahead([a, b, c])
        assert zf.keys_ahead.material_for(a.header_offset, PASSWORD, second) is None  # not this member's salt
        assert zf.keys_ahead.material_for(b.header_offset, b"another password", second) is None
        assert zf.keys_ahead.material_for(c.header_offset, PASSWORD, third) == reference_key(third, 66)
        assert zf.keys_ahead.material_for(a.header_offset, PASSWORD, first) is None  # already handed out
    assert not key_threads()


def test_decrypter_sets_what_pyzippers_own_sets(tmp_path: Path) -> None:
    """Guards a pyzipper upgrade: the decrypter built from key material must carry the same attributes."""
    data = pyzipper_archive({"a.txt": b"x" * 100}, 256)
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    salt = salts(data, 256)[0]
    start = data.index(salt)
    header = data[start:start + SALT_BYTES[256] + 2]
    own = AESZipDecrypter(info, PASSWORD, header)
    ours = prederived_decrypter(info, PASSWORD, header, reference_key(salt, 66))
    assert set(vars(ours)) == set(vars(own))
    assert isinstance(ours.hmac, SideDigest)
    assert type(ours.hmac._digest).__module__ == "hmac"  # the standard library's HMAC, on a thread past 1 MiB
    with pytest.raises(RuntimeError) as own_error:
        AESZipDecrypter(info, b"wrong", header)
    with pytest.raises(RuntimeError) as our_error:
        prederived_decrypter(info, b"wrong", header)
    assert str(our_error.value) == str(own_error.value)


def test_verify_of_many_members_derives_their_keys_ahead(
    many: tuple[Path, ArchiveResult, Path], derivations: list[str]
) -> None:
    target, result, _ = many
    verified = verify_archive(target, password=PASSWORD, expected_sha256=result.sha256)
    assert verified.members_checked == result.member_count
    # Every file member's key came from the threads; only the manifest's was derived while reading it.
    assert sum(name.startswith("aes-key-read") for name in derivations) == MEMBERS
    assert len(derivations) == MEMBERS + 1
    assert not key_threads()


def test_extract_of_many_members_derives_their_keys_ahead(
    many: tuple[Path, ArchiveResult, Path], derivations: list[str], tmp_path: Path
) -> None:
    target, _, root = many
    created = safe_extract(target, tmp_path / "out", password=PASSWORD)
    for path in root.rglob("*.pdf"):
        assert (tmp_path / "out" / "uploads" / path.relative_to(root)).read_bytes() == path.read_bytes()
    assert len([p for p in created if p.is_file()]) == MEMBERS + 1
    assert sum(name.startswith("aes-key-read") for name in derivations) == MEMBERS + 1
    assert not key_threads()


def test_members_read_out_of_order_or_skipped_still_read_right(tmp_path: Path) -> None:
    members = {f"{i}.txt": b"member %d " % i * 50 for i in range(10)}
    path = tmp_path / "a.zip"
    path.write_bytes(pyzipper_archive(members, 256))
    with key_pool_zip_file(path, "r") as zf:
        zf.setpassword(PASSWORD)
        infos = zf.infolist()
        zf.derive_keys_ahead(infos)
        for i in (5, 2, 9, 3):  # ahead of the plan, behind it, and skipping members
            assert zf.read(infos[i]) == members[f"{i}.txt"]
        with zf.open(infos[9]) as stream:  # a rewind derives the key again
            stream.read(100)
            stream.seek(0)
            assert stream.read() == members["9.txt"]
    assert not key_threads()


def test_archive_without_a_file_descriptor_reads_without_threads() -> None:
    data = pyzipper_archive({"a.txt": b"abc" * 100, "b.txt": b"def"}, 128)
    with key_pool_zip_file(io.BytesIO(data), "r") as zf:
        zf.setpassword(PASSWORD)
        zf.derive_keys_ahead(zf.infolist())
        assert not key_threads()
        assert zf.read("a.txt") == b"abc" * 100
        assert zf.read("b.txt") == b"def"


def test_flipped_byte_in_a_member_fails_with_todays_sentence(many: tuple[Path, ArchiveResult, Path]) -> None:
    target, _, _ = many
    name = "uploads/01/invoice-60.pdf"
    flip_byte(target, data_offset(target, name) + 18 + 50)  # past salt and verifier
    with pytest.raises(VerificationError) as info:
        verify_archive(target, password=PASSWORD)
    assert str(info.value) == (f"Member {name!r} of archive {target} failed its integrity check (Bad HMAC check "
                               f"for file {name!r}): the archive is corrupt or was tampered with.")
    assert not key_threads()


def test_wrong_password_fails_with_todays_sentence(many: tuple[Path, ArchiveResult, Path], tmp_path: Path) -> None:
    target, _, _ = many
    with pytest.raises(ArchiveError) as info:
        verify_archive(target, password=b"wrong")
    assert str(info.value) == f"Wrong archive password for {target}: check backup.password in the config."
    with pytest.raises(ArchiveError, match="^Wrong archive password for"):
        safe_extract(target, tmp_path / "out", password=b"wrong")
    assert not key_threads()


def test_changed_salt_of_a_later_member_fails_its_password_check(many: tuple[Path, ArchiveResult, Path]) -> None:
    """A key derived ahead is checked against the member's own salt and verifier, as pyzipper checks it."""
    target, _, _ = many
    flip_byte(target, data_offset(target, "uploads/02/invoice-100.pdf"))  # the salt's first byte
    with pytest.raises(ArchiveError) as info:
        verify_archive(target, password=PASSWORD)
    # A changed salt gives other keys: the two-byte verifier almost surely differs (else the HMAC fails).
    assert str(info.value) in (
        f"Wrong archive password for {target}: check backup.password in the config.",
        f"Member 'uploads/02/invoice-100.pdf' of archive {target} failed its integrity check (Bad HMAC check "
        "for file 'uploads/02/invoice-100.pdf'): the archive is corrupt or was tampered with.",
    )
    assert not key_threads()


def test_truncated_archive_fails_with_todays_sentence(many: tuple[Path, ArchiveResult, Path]) -> None:
    target, result, _ = many
    os.truncate(target, result.size - 40)
    with pytest.raises(VerificationError) as info:
        verify_archive(target, password=PASSWORD)
    assert str(info.value).startswith(f"Archive {target} is not a readable zip file (")
    assert str(info.value).endswith("): it is truncated or corrupt.")
    assert not key_threads()


def test_member_pointing_past_the_end_fails_with_todays_sentence(many: tuple[Path, ArchiveResult, Path]) -> None:
    """The thread cannot read that member's salt; the reader meets the same problem and reports it as before."""
    target, _, _ = many
    name = "uploads/02/invoice-110.pdf"
    point_past_the_end(target, name)
    with pytest.raises(VerificationError) as info:
        verify_archive(target, password=PASSWORD)
    assert str(info.value) == (f"Member {name!r} of archive {target} cannot be read (Truncated file header): "
                               "the archive is corrupt.")
    assert not key_threads()


def point_past_the_end(path: Path, name: str) -> None:
    """Set the central directory's local header offset of ``name`` beyond the end of the file."""
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    encoded = name.encode()
    while True:
        name_length = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46:entry + 46 + name_length] == encoded:
            break
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<L", data, entry + 42, len(data) + 1000)
    path.write_bytes(bytes(data))


def test_threads_stop_when_reading_fails_midway(many: tuple[Path, ArchiveResult, Path], tmp_path: Path) -> None:
    target, _, _ = many
    flip_byte(target, data_offset(target, "uploads/00/invoice-3.pdf") + 18 + 10)
    with pytest.raises(VerificationError):
        verify_archive(target, password=PASSWORD)
    assert not key_threads()
    with pytest.raises(VerificationError):
        safe_extract(target, tmp_path / "out", password=PASSWORD)
    assert not key_threads()


def test_key_material_never_shows_in_a_repr(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(pyzipper_archive({"a.txt": b"a", "b.txt": b"b"}, 256))
    with key_pool_zip_file(path, "r") as zf:
        zf.setpassword(PASSWORD)
        infos: list[Any] = zf.infolist()
        zf.derive_keys_ahead(infos)
        text = repr(zf.keys_ahead) + repr(list(zf.keys_ahead._queue))
        with zf.open(infos[0]) as stream:
            text += repr(stream) + repr(stream._decrypter)
    assert PASSWORD.decode() not in text
    for salt in salts(path.read_bytes(), 256):
        assert reference_key(salt, 66).hex() not in text
        assert repr(reference_key(salt, 66)) not in text


@pytest.fixture
def large(tmp_path: Path) -> tuple[Path, ArchiveResult, str]:
    """An archive with one 3 MiB member: past SideDigest's first MiB, its HMAC runs on a thread."""
    root = tmp_path / "large"
    root.mkdir()
    (root / "export.csv").write_bytes(os.urandom(3 << 20))
    target = tmp_path / "large.zip"
    return target, build(target, dumps=[], files=entries_of(root)), "large/export.csv"


def test_members_are_ae2_with_no_crc_and_pyzippers_own_reader_checks_their_hmac(
        large: tuple[Path, ArchiveResult, str]) -> None:
    target, _, name = large
    with pyzipper.AESZipFile(target) as zf:  # pyzipper's own decrypter and HMAC, not ours
        zf.setpassword(PASSWORD)
        info = zf.getinfo(name)
        assert (info.wz_aes_version, info.CRC) == (2, 0)
        assert zf.read(name) == (target.parent / name).read_bytes()


def test_written_here_skips_only_the_hmacs_the_writers_sha256_proves(large: tuple[Path, ArchiveResult, str]) -> None:
    target, result, name = large
    with pytest.raises(ValueError):
        verify_archive(target, password=PASSWORD, written_here=True)  # nothing proves the HMACs then
    info = pyzipper.AESZipFile(target).getinfo(name)
    flip_byte(target, data_offset(target, name) + info.compress_size - 1)  # inside the member's HMAC
    # The sha256 its writer took no longer matches: the damage is found without the HMAC.
    with pytest.raises(VerificationError, match="has sha256 .* was recorded: it is corrupt or was replaced"):
        verify_archive(target, password=PASSWORD, expected_sha256=result.sha256, written_here=True)
    # Given a sha256 of the damaged file (as a receipt replaced with it would say), only the HMAC finds it.
    replaced = hashlib.sha256(target.read_bytes()).hexdigest()
    with pytest.raises(VerificationError, match="Bad HMAC check"):
        verify_archive(target, password=PASSWORD, expected_sha256=replaced)
    checked = verify_archive(target, password=PASSWORD, expected_sha256=replaced, written_here=True)
    assert checked.members_checked == result.member_count and checked.bytes_checked > 3 << 20
