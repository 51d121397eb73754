"""WinZip AES keys derived ahead in threads: the same format, a fresh salt per member, nothing left running."""

from __future__ import annotations

import io
import struct
import threading
import zipfile
from typing import Any

import pytest
import pyzipper
from Cryptodome.Protocol.KDF import PBKDF2
from pyzipper.zipfile_aes import AESZipEncrypter

from backup_ops.core.aes_keys import SALT_BYTES, AESKeyPool, derive_key, key_pool_zip_file, prederived_encrypter

PASSWORD = b"Zm9vYmFyYmF6cXV4IGEgaGlnaC1lbnRyb3B5IHBhc3N3b3Jk"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def reference_key(salt: bytes, length: int, password: Any = PASSWORD) -> bytes:
    """pycryptodome's PBKDF2, which pyzipper's decrypter derives with (its stubs type the password as str)."""
    return bytes(PBKDF2(password, salt, count=1000, dkLen=length))


def key_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("aes-key")]


def salts(data: bytes, nbits: int) -> list[bytes]:
    """The salt of every encrypted member, read from its local header (the bytes right after name and extra)."""
    found = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if not info.flag_bits & 0x1:
                continue
            fields = _LOCAL_HEADER.unpack_from(data, info.header_offset)
            start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
            found.append(data[start:start + SALT_BYTES[nbits]])
    return found


def write_archive(members: dict[str, bytes], nbits: int = 256, password: bytes = PASSWORD) -> bytes:
    buffer = io.BytesIO()
    with key_pool_zip_file(buffer, "w", compression=pyzipper.ZIP_DEFLATED) as zf:
        zf.setpassword(password)
        zf.setencryption(pyzipper.WZ_AES, nbits=nbits)
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("nbits", [128, 192, 256])
def test_derived_key_is_pbkdf2_hmac_sha1_1000_of_a_random_salt(nbits: int) -> None:
    keys = [derive_key(PASSWORD, nbits) for _ in range(3)]
    for key in keys:
        assert len(key.salt) == SALT_BYTES[nbits]
        # pycryptodome's PBKDF2 is what pyzipper's decrypter derives with: the two must agree.
        assert key.material == reference_key(key.salt, 2 * nbits // 8 + 2)
    assert len({key.salt for key in keys}) == 3


@pytest.mark.parametrize("nbits", [128, 192, 256])
def test_prederived_encrypter_sets_what_pyzippers_own_sets(nbits: int) -> None:
    """Guards a pyzipper upgrade: the encrypter built from a pre-derived key must carry the same attributes."""
    own = AESZipEncrypter(PASSWORD, nbits=nbits)
    ours = prederived_encrypter(derive_key(PASSWORD, nbits), nbits)
    assert set(vars(ours)) == set(vars(own))
    assert (ours.salt_length, ours.aes_strength, len(ours.encpwdverify)) == (
        own.salt_length, own.aes_strength, len(own.encpwdverify))
    with pytest.raises(ValueError, match="another key size"):
        prederived_encrypter(derive_key(PASSWORD, 128), 256)


@pytest.mark.parametrize("nbits", [128, 192, 256])
def test_archive_opens_with_pyzipper_and_every_member_has_its_own_salt(nbits: int) -> None:
    members = {f"uploads/file-{i}.txt": (b"invoice %d " % i) * (i + 1) for i in range(40)}
    data = write_archive(members, nbits)

    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        zf.setpassword(PASSWORD)
        assert {info.filename: zf.read(info) for info in zf.infolist()} == members
        assert {info.wz_aes_strength for info in zf.infolist()} == {nbits // 64 - 1}
    member_salts = salts(data, nbits)
    assert len(member_salts) == len(members)
    assert len(set(member_salts)) == len(members)
    assert not key_threads()  # close() stopped the pool


def test_wrong_password_is_refused() -> None:
    data = write_archive({"a.txt": b"secret data"})
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        zf.setpassword(b"not the password")
        with pytest.raises(RuntimeError, match="(?i)bad password"):
            zf.read("a.txt")


def test_a_changed_byte_of_encrypted_data_fails_the_hmac_check() -> None:
    """The authentication code is written right: pyzipper checks it, and one flipped byte fails it."""
    data = bytearray(write_archive({"a.txt": b"x" * 5000}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("a.txt")
    fields = _LOCAL_HEADER.unpack_from(data, info.header_offset)
    payload = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1] + SALT_BYTES[256] + 2
    data[payload + 10] ^= 0x01
    with pyzipper.AESZipFile(io.BytesIO(bytes(data))) as zf:
        zf.setpassword(PASSWORD)
        with pytest.raises(pyzipper.BadZipFile, match="(?i)hmac"):
            zf.read("a.txt")


def test_members_without_encryption_and_a_changed_password_still_work() -> None:
    buffer = io.BytesIO()
    with key_pool_zip_file(buffer, "w") as zf:
        zf.setpassword(PASSWORD)
        zf.setencryption(pyzipper.WZ_AES, nbits=256)
        zf.writestr("one.txt", b"first")
        zf.setpassword(None)
        zf.setencryption(None)
        zf.writestr("dir/", b"")
        zf.setpassword(b"another password")
        zf.setencryption(pyzipper.WZ_AES, nbits=128)
        zf.writestr("two.txt", b"second")
    with pyzipper.AESZipFile(io.BytesIO(buffer.getvalue())) as zf:
        assert not zf.getinfo("dir/").flag_bits & 0x1
        assert zf.read("one.txt", pwd=PASSWORD) == b"first"
        assert zf.read("two.txt", pwd=b"another password") == b"second"
    assert not key_threads()


def test_pool_derives_ahead_and_stops_on_close() -> None:
    with AESKeyPool(PASSWORD, 256, workers=2, ahead=3) as pool:
        assert not key_threads()  # nothing starts before the first member needs a key
        taken = [pool.take() for _ in range(5)]
        assert key_threads()
        assert all(k.material == reference_key(k.salt, 66) for k in taken)
        assert len({k.salt for k in taken}) == 5
        assert pool.matches(PASSWORD, 256)
        assert not pool.matches(PASSWORD, 128)
        assert not pool.matches(b"other", 256)
    assert not key_threads()
    with pytest.raises(RuntimeError, match="closed"):
        pool.take()


def test_stop_deriving_when_the_archive_is_abandoned() -> None:
    """build_archive drops a failed archive without closing it; stop_deriving() still ends the threads."""
    zf = key_pool_zip_file(io.BytesIO(), "w")
    zf.setpassword(PASSWORD)
    zf.setencryption(pyzipper.WZ_AES, nbits=256)
    zf.writestr("a.txt", b"data")
    assert key_threads()
    zf.stop_deriving()
    zf.stop_deriving()
    assert not key_threads()
    zf.fp = None  # as build_archive abandons a partial archive


def test_key_material_never_shows_in_a_repr() -> None:
    key = derive_key(PASSWORD, 256)
    pool = AESKeyPool(PASSWORD, 256)
    for text in (repr(key), repr(pool)):
        assert key.material.hex() not in text
        assert PASSWORD.decode() not in text
        assert repr(key.material) not in text
    pool.close()


@pytest.mark.parametrize(("password", "nbits"), [(b"", 256), (PASSWORD, 512)])
def test_pool_refuses_bad_arguments(password: bytes, nbits: int) -> None:
    with pytest.raises(ValueError):
        AESKeyPool(password, nbits)
