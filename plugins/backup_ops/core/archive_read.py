"""Reading a backup archive back: prove it intact member by member, or stream one member out.

Every reader treats the archive as hostile: names are checked for duplicates, members must match
the manifest, and pyzipper's and zlib's many error types become one VerificationError sentence.
A wrong or missing password names where the password came from (``password_source``: the
config's reference for the tasks, an environment variable or a prompt for the CLI).
Archives are opened with ``aes_keys.key_pool_zip_file``: members are authenticated with the
standard library's HMAC-SHA1, and a reader that reads many members in a known order (the
verification, ``extract.safe_extract``) calls ``derive_keys_ahead`` so their WinZip AES keys are
derived in threads while the current member is read.
pyzipper is imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_ops.core.aes_keys import key_pool_zip_file
from backup_ops.core.config import SecretRef
from backup_ops.core.errors import ArchiveError, BackupError, UnsafeArchiveError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE, MEMBER_PIECE, sha256_of_file
from backup_ops.core.hashed_writer import SideDigest
from backup_ops.core.manifest import MANIFEST_NAME, Manifest
from backup_ops.core.manifest_parse import MAX_MANIFEST_BYTES, parse_manifest

_AES_STRENGTH = {"aes128": 1, "aes192": 2, "aes256": 3}  # WinZip AE extra field strength codes
_ZIP_ENCRYPTED_FLAG = 0x1


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify_archive`` checked."""

    members_checked: int
    bytes_checked: int
    manifest: Manifest
    manifest_sha256: str


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    """What pyzipper and zlib raise on damaged or crafted data."""
    import pyzipper

    return (pyzipper.BadZipFile, pyzipper.LargeZipFile, zlib.error, EOFError, struct.error, ValueError,
            NotImplementedError, KeyError, IndexError, OverflowError, UnicodeDecodeError)


DEFAULT_PASSWORD_SOURCE = "backup.password in the config"
"""Where the password came from, when the caller does not say: the tasks' source."""


def password_source_of(ref: SecretRef | None) -> str:
    """The phrase naming where the config's ``backup.password`` reference ``ref`` keeps the password."""
    if ref is None:
        return DEFAULT_PASSWORD_SOURCE
    where = {
        "variable": f"the Airflow variable {ref.name}",
        "env": f"the worker's environment variable {ref.name}",
        "connection": f"the password of the Airflow connection {ref.name}",
    }[ref.kind]
    return f"{where} ({DEFAULT_PASSWORD_SOURCE})"


def _wrong_password(path: Path, source: str) -> ArchiveError:
    return ArchiveError(f"Wrong archive password for {path}: check {source}.", retryable=False)


def _no_password(path: Path, source: str) -> ArchiveError:
    return ArchiveError(f"Archive {path} is encrypted but no password was given: set {source}.", retryable=False)


@contextmanager
def open_zip(path: Path, password: bytes | None, *, trust_writer_sha256: bool = False) -> Iterator[Any]:
    """The archive for reading; key derivation threads (``derive_keys_ahead``) stop when the block ends.

    ``trust_writer_sha256``: members are read without their HMAC-SHA1, for a caller that compares the
    file's sha256 with the one its writer computed (``KeyPoolZipFile.trust_writer_sha256`` says when).
    """
    try:
        zf = key_pool_zip_file(path, "r")
    except FileNotFoundError:
        raise ArchiveError(f"Archive {path} does not exist.") from None
    except OSError as exc:
        raise ArchiveError(f"Archive {path} cannot be read: {exc.strerror or exc}.") from exc
    except _corrupt_errors() as exc:
        raise VerificationError(f"Archive {path} is not a readable zip file ({exc}): it is truncated or corrupt.") \
            from exc
    with zf:
        if password:
            zf.setpassword(password)
        if trust_writer_sha256:
            zf.trust_writer_sha256()
        yield zf


def open_info(zf: Any, info: Any, path: Path, password: bytes | None,
              password_source: str = DEFAULT_PASSWORD_SOURCE) -> Any:
    """Open one member for reading, turning password and format problems into clear errors.

    ``password_source`` names where ``password`` came from, for the wrong/missing password sentence.
    """
    if info.flag_bits & _ZIP_ENCRYPTED_FLAG and not password:
        raise _no_password(path, password_source)
    try:
        return zf.open(info)
    except RuntimeError as exc:
        # pyzipper's only RuntimeErrors on open are about passwords (bad verifier, none given).
        if password:
            raise _wrong_password(path, password_source) from exc
        raise _no_password(path, password_source) from exc
    except _corrupt_errors() as exc:
        raise VerificationError(f"Member {info.filename!r} of archive {path} cannot be read ({exc}): "
                                "the archive is corrupt.") from exc


def read_chunks(stream: Any, name: str, path: Path, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The member's bytes in chunks of ``size``; the HMAC (AES) or CRC check runs when the end is reached."""
    try:
        while True:
            chunk = stream.read(size)
            if not chunk:
                return
            yield chunk
    except _corrupt_errors() as exc:
        raise VerificationError(f"Member {name!r} of archive {path} failed its integrity check ({exc}): "
                                "the archive is corrupt or was tampered with.") from exc


def verify_archive(
    path: Path,
    *,
    password: bytes | None,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    password_source: str = DEFAULT_PASSWORD_SOURCE,
    written_here: bool = False,
) -> VerifyResult:
    """Prove an archive is intact: file size and sha256, manifest, and every member's size and sha256.

    Decrypting each member checks its WinZip AES HMAC, so this also proves the password.
    ``written_here``: ``expected_sha256`` is the one this process computed as it wrote the archive
    (the archive step's own read-back, not a receipt read from storage). The file's sha256 then
    proves every HMAC as written, so they are not computed again; the password is still proven by
    each member's key verifier and every member is still decrypted and compared with the manifest.
    Members not in the manifest fail the check, except empty directory entries. Integrity
    failures raise VerificationError; password and manifest problems raise ArchiveError, a
    password one naming ``password_source`` ("the environment variable X", see
    ``password_source_of`` for the config's reference).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VerificationError(f"Archive {path} does not exist.") from None
    except OSError as exc:
        raise VerificationError(f"Archive {path} cannot be read: {exc.strerror or exc}.") from exc
    if expected_size is not None and size != expected_size:
        raise VerificationError(f"Archive {path} is {size} bytes but {expected_size} were written: "
                                "it is truncated or was replaced.")
    if expected_sha256 is None:
        if written_here:
            raise ValueError("written_here needs the sha256 its writer computed (expected_sha256).")
        return _check_contents(path, password, password_source)
    # The file's sha256 is taken in a thread while the members are decrypted and checked (hashlib and
    # the AES release the GIL): two passes over the file in the time of one on two cores.
    with ThreadPoolExecutor(1, thread_name_prefix="archive-sha256") as pool:
        hashed = pool.submit(sha256_of_file, path)
        try:
            result = _check_contents(path, password, password_source, trust_writer_sha256=written_here)
        except BaseException:
            _check_file_sha256(path, hashed, expected_sha256, quiet=True)  # a replaced file explains the rest
            raise
        _check_file_sha256(path, hashed, expected_sha256)
    return result


def _check_file_sha256(path: Path, hashed: Future[tuple[str, int]], expected: str, *, quiet: bool = False) -> None:
    """Raise when the file's sha256 is not ``expected``; ``quiet``: stay silent when it could not be read."""
    try:
        actual, _ = hashed.result()
    except OSError as exc:
        if quiet:
            return
        raise VerificationError(f"Archive {path} cannot be read: {exc.strerror or exc}.") from exc
    if actual != expected.lower():
        raise VerificationError(f"Archive {path} has sha256 {actual} but {expected} was recorded: "
                                "it is corrupt or was replaced.")


def _check_contents(path: Path, password: bytes | None, password_source: str, *,
                    trust_writer_sha256: bool = False) -> VerifyResult:
    """The manifest and every member, decrypted and checked against it (verify_archive's second half)."""
    with open_zip(path, password, trust_writer_sha256=trust_writer_sha256) as zf:
        infos = unique_infos(zf, path, VerificationError)
        manifest_info = infos.get(MANIFEST_NAME)
        if manifest_info is None:
            raise VerificationError(f"Archive {path} has no {MANIFEST_NAME}: it was not written by backup-ops "
                                    "or is incomplete.")
        if manifest_info.file_size > MAX_MANIFEST_BYTES:
            raise VerificationError(f"{MANIFEST_NAME} in {path} is {manifest_info.file_size} bytes, more than the "
                                    f"{MAX_MANIFEST_BYTES} accepted.")
        with open_info(zf, manifest_info, path, password, password_source) as stream:
            manifest_data = b"".join(read_chunks(stream, MANIFEST_NAME, path))
        manifest = parse_manifest(manifest_data)
        expected = manifest.members_by_name()
        missing = next((name for name in expected if name not in infos), None)
        if missing is not None:
            raise VerificationError(f"Member {missing!r} listed in the manifest is missing from archive {path}.")
        extra = next((n for n in infos if n != MANIFEST_NAME and n not in expected and not n.endswith("/")), None)
        if extra is not None:
            raise VerificationError(f"Archive {path} contains {extra!r}, which its manifest does not list: "
                                    "it was modified after it was written.")
        strength = _AES_STRENGTH.get(manifest.encryption)
        checked_bytes = len(manifest_data)
        derive_keys_ahead(zf, [infos[member.name] for member in manifest.members if not member.is_dir])
        for member in manifest.members:
            info = infos[member.name]
            if member.is_dir:
                if info.file_size:
                    raise VerificationError(f"Directory entry {member.name!r} in {path} has content.")
                continue
            if getattr(info, "wz_aes_strength", None) != strength:
                raise VerificationError(
                    f"Member {member.name!r} of {path} is not encrypted the way the manifest says "
                    f"({manifest.encryption}): it was modified after it was written."
                )
            checked_bytes += _check_member(zf, info, member.size, member.sha256, path, password, password_source)
    return VerifyResult(
        members_checked=len(manifest.members) + 1,
        bytes_checked=checked_bytes,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_data).hexdigest(),
    )


def derive_keys_ahead(zf: Any, infos: list[Any]) -> None:
    """Derive the AES keys of ``infos``, the members about to be read in this order, in threads (see aes_keys)."""
    zf.derive_keys_ahead(infos)


def unique_infos(zf: Any, path: Path, error: type[BackupError]) -> dict[str, Any]:
    """The members by name; two entries with one name are refused (readers disagree on which wins)."""
    infos: dict[str, Any] = {}
    for info in zf.infolist():
        if info.filename in infos:
            raise error(f"Archive {path} contains {info.filename!r} twice: it was modified or crafted.")
        infos[info.filename] = info
    return infos


def _check_member(zf: Any, info: Any, size: int, sha256: str, path: Path, password: bytes | None,
                  password_source: str) -> int:
    sha = SideDigest(hashlib.sha256())  # a large member's sha256 runs beside its decryption
    actual = 0
    with open_info(zf, info, path, password, password_source) as stream:
        for chunk in read_chunks(stream, info.filename, path, MEMBER_PIECE):
            sha.update(chunk)
            actual += len(chunk)
    if actual != size or sha.hexdigest() != sha256:
        raise VerificationError(
            f"Member {info.filename!r} of archive {path} does not match its manifest: {actual} bytes with sha256 "
            f"{sha.hexdigest()}, expected {size} bytes with sha256 {sha256}."
        )
    return actual


@contextmanager
def open_member(path: Path, name: str, password: bytes | None, *,
                password_source: str = DEFAULT_PASSWORD_SOURCE) -> Iterator[io.RawIOBase]:
    """Stream one member (e.g. a dump into psql) without extracting it; ``password_source`` as for verify.

    The member is authenticated (AES HMAC or CRC) only when its end is read: a consumer must
    treat a VerificationError at the end as failure of everything it did with the data (for
    psql: run it in a single transaction and roll back).
    """
    path = Path(path)
    with open_zip(path, password) as zf:
        infos = unique_infos(zf, path, UnsafeArchiveError)
        info = infos.get(name)
        if info is None:
            raise ArchiveError(f"Archive {path} has no member named {name!r}.")
        with open_info(zf, info, path, password, password_source) as stream:
            yield _MemberReader(stream, name, path)


class _MemberReader(io.RawIOBase):
    """A member stream whose integrity failures surface as VerificationError."""

    def __init__(self, stream: Any, name: str, path: Path) -> None:
        super().__init__()
        self._stream = stream
        self._name = name
        self._path = path

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data: bytes = self._stream.read(-1 if size is None else size)
        except _corrupt_errors() as exc:
            raise VerificationError(f"Member {self._name!r} of archive {self._path} failed its integrity check "
                                    f"({exc}): the archive is corrupt or was tampered with.") from exc
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)
