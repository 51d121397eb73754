"""Building the backup archive: dumps, files and manifest streamed into one zip, hashed as it is written.

Format (laravel-backup compatible): a zip with the database dumps, each followed by the roles and
database settings staged beside it (``postgresql-<db>.roles.sql``, ``….database.json``), then the
selected files and directories, then ``manifest.json``. With a password every file member is
WinZip AES encrypted (128/192/256 bit, AE-2) and opens with 7-Zip; directory entries carry no data
and stay plain. Dumps and already-compressed files are stored, everything else deflated.

Everything streams in 1 MiB chunks; memory grows only with the number of members, which the
zip central directory (and the manifest) must hold anyway. pyzipper is imported inside the
functions so importing this module stays cheap. Listed files are opened by ``archive_source``
exactly as they were listed, or recorded as skipped; the file itself is written through
``archive_sink``. Reading an archive back is ``archive_read``; taking it apart for a restore is
``extract``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backup_ops.core.archive_sink import HashingSink, write_error
from backup_ops.core.archive_source import ListedFileOpener
from backup_ops.core.config import FileSource
from backup_ops.core.errors import ArchiveError, BackupError
from backup_ops.core.fileio import MEMBER_PIECE, fsync_directory
from backup_ops.core.files import SelectedEntry
from backup_ops.core.manifest import (
    EMPTY_SHA256,
    MANIFEST_NAME,
    MemberInfo,
    manifest_bytes,
    member_name_problem,
    with_skipped,
)
from backup_ops.core.manifest_parse import parse_manifest
from backup_ops.core.models import DumpResult, SkippedFile, printable_name
from backup_ops.core.sealed_member import HMAC_BYTES
from backup_ops.core.skips import SkipTally

StagedOpener = Callable[[str], tuple[BinaryIO, os.stat_result]]
"""Opens a staged dump that is not a local file: (its stream, a stat with its size, mode and mtime)."""

_LOG = logging.getLogger(__name__)

AES_BITS = {"aes128": 128, "aes192": 192, "aes256": 256}
_DOS_DIRECTORY_FLAG = 0x10

# Suffixes whose content is already compressed (or encrypted): deflating them again costs CPU
# (deflate runs at ~24 MB/s, storing at ~300 MB/s) and saves nothing.
PRECOMPRESSED_SUFFIXES = frozenset({
    # archives and compressed streams
    ".gz", ".tgz", ".zip", ".zipx", ".jar", ".war", ".ear", ".apk", ".aab", ".ipa", ".whl", ".egg", ".nupkg",
    ".7z", ".xz", ".txz", ".zst", ".zstd", ".tzst", ".bz2", ".tbz", ".tbz2", ".lz4", ".lz", ".lzma", ".tlz",
    ".rar", ".br", ".cab", ".deb", ".rpm", ".crx", ".xpi", ".sz", ".z",
    # images
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".heic", ".heif", ".jxl", ".jp2",
    # audio and video
    ".mp3", ".mp4", ".m4a", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ogg", ".oga", ".ogv", ".opus",
    ".flac", ".aac", ".wma", ".wmv", ".3gp",
    # documents and fonts that are zip or compressed containers
    ".pdf", ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".epub", ".woff", ".woff2",
    # encrypted data does not compress
    ".gpg", ".pgp", ".age", ".enc",
})


def is_precompressed(name: str) -> bool:
    """True when ``name``'s suffix marks content that deflate cannot shrink."""
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return dot > 0 and base[dot:].lower() in PRECOMPRESSED_SUFFIXES


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ArchiveResult:
    """What ``build_archive`` wrote.

    ``members`` lists every member except ``manifest.json`` (as the manifest does);
    ``member_count`` counts every zip entry, the manifest and directories included.
    ``skipped`` lists, in listing order, the files not archived as listed (skipped when the
    listing was made or when the archive was, and files archived as read that changed while
    being read), as the manifest's ``skipped`` does.
    """

    path: Path
    size: int
    sha256: str
    member_count: int
    file_count: int
    file_bytes: int
    manifest_sha256: str
    members: tuple[MemberInfo, ...]
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def skipped_counts(self) -> dict[str, int]:
        """How many files were skipped, by reason (``{"vanished": 2, "changed": 1}``)."""
        return dict(Counter(s.reason for s in self.skipped))


# ---------------------------------------------------------------------------- building


def build_archive(
    target: Path,
    *,
    dumps: Sequence[DumpResult],
    files: Iterable[SelectedEntry | SkippedFile],
    password: bytes | None,
    encryption: str,
    compression_level: int,
    make_manifest: Callable[[list[MemberInfo]], dict[str, Any]],
    log: logging.Logger | None = None,
    fail_on: Collection[str] = FileSource().fail_on,
    open_staged: StagedOpener | None = None,
    sync: bool = True,
) -> ArchiveResult:
    """Write the backup zip to ``target`` (a new file, mode 0600) and return its size and sha256.

    Members: the dumps (each followed by its staged roles and settings), then ``files``
    (consumed lazily, so selection streams into the zip), then ``manifest.json`` from
    ``make_manifest(members)``, its ``skipped`` list set to the files skipped at listing time
    (the SkippedFile items of ``files``) or here: vanished, replaced, unreadable, or changed
    while read (archived as read). Each member's size and sha256 are of the bytes actually
    written, so a file that changes while being read cannot make the manifest lie. A skip whose
    reason is in ``fail_on`` raises FileSelectionError at once, as does a staged dump (or its
    roles or settings) that no longer matches its DumpResult size/sha256 (ArchiveError).
    On any failure the partial file is removed and the error is raised; a full disk at any point
    is the ArchiveError naming the staging directory. ``open_staged`` opens a dump's (or its
    extra member's) ``staged_path`` when that is not a local file (an object in a staging bucket):
    it returns the stream and a stat whose size, mode and mtime describe it. The archive and its
    directory entry are fsynced before this returns; with ``sync=False`` the caller does it with
    ``make_durable`` (the archive step, while it verifies the archive).
    """
    log = log or _LOG
    nbits = _check_encryption(encryption, password)
    if isinstance(compression_level, bool) or not isinstance(compression_level, int) \
            or not 0 <= compression_level <= 9:
        raise ArchiveError(f"compression_level must be a whole number 0–9, got {compression_level!r}.")
    import pyzipper

    from backup_ops.core.aes_keys import key_pool_zip_file

    target = Path(target)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise ArchiveError(f"Archive {target} already exists; refusing to overwrite it.") from None
    except OSError as exc:
        raise write_error(exc, target) from exc
    zf = sink = None
    sources = ListedFileOpener()
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; make 0600 exact whatever it is
        sink = HashingSink(fd, target)
        # Each encrypted member's WinZip AES keys are derived ahead in threads (core.aes_keys): the
        # per-member PBKDF2 would otherwise stall the writer at every small file.
        zf = key_pool_zip_file(sink, "w", compression=pyzipper.ZIP_STORED, allowZip64=True)
        writer = _ArchiveWriter(zf, password, nbits, compression_level, SkipTally(fail_on, log), sources,
                                open_staged)
        for dump in dumps:
            writer.add_dump(dump)
        for entry in files:
            writer.add_entry(entry)
        manifest_data = writer.add_manifest(make_manifest)
        zf.close()
        sink.flush()
        on_disk = os.fstat(fd).st_size
        if on_disk != sink.position:
            raise ArchiveError(f"Archive {target} is {on_disk} bytes on disk but {sink.position} were written.")
        fd, closing = -1, fd  # never close twice: the number may already belong to another open file
        os.close(closing)
    except BaseException as exc:
        if zf is not None:
            # The partial archive is deleted, so never let pyzipper write its central directory
            # (it would on close or garbage collection) and bury the original error.
            zf.fp = None
            zf.stop_deriving()
        if sink is not None:
            sink.close()  # its thread writes to fd: stop it before the descriptor is closed (and reused)
        if fd >= 0:
            _close_quietly(fd)
        _remove(target)
        if not isinstance(exc, Exception):
            raise
        if sink is not None and sink.failure is not None and exc is not sink.failure:
            # The disk filled up: whatever zipfile raised while unwinding, that is the cause.
            raise ArchiveError(str(sink.failure)) from exc
        if isinstance(exc, BackupError):
            raise
        if isinstance(exc, OSError):
            raise write_error(exc, target) from exc
        raise ArchiveError(f"Building archive {target} failed: {exc}.") from exc
    finally:
        sources.close()
        if sink is not None:
            sink.close()
    if sync:
        make_durable(target)
    return ArchiveResult(
        path=target,
        size=sink.position,
        sha256=sink.hexdigest(),
        member_count=len(writer.members) + 1,
        file_count=writer.file_count,
        file_bytes=writer.file_bytes,
        manifest_sha256=hashlib.sha256(manifest_data).hexdigest(),
        members=tuple(writer.members),
        skipped=tuple(writer.skipped),
    )


def make_durable(target: Path) -> None:
    """fsync a built archive, then its directory entry; a failure removes it (``build_archive`` calls it
    last, unless ``sync=False`` leaves it to the caller).

    The disk may only now say it is full (space allocated at writeback) or failing: the archive is
    then not what was verified, so it goes, and the error is the ArchiveError ``build_archive`` raises.
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(target.parent)
    except OSError as exc:
        _remove(target)
        raise write_error(exc, target) from exc


def _check_encryption(encryption: str, password: bytes | None) -> int | None:
    """The AES key size for ``encryption``, or None for a plain zip; refuses inconsistent input."""
    if encryption == "none":
        if password is not None:
            raise ArchiveError("A password was given but encryption is 'none'; pass password=None for a plain "
                               "archive or choose aes256, aes192 or aes128.")
        return None
    if encryption not in AES_BITS:
        raise ArchiveError(f"encryption must be one of aes256, aes192, aes128 or none, got {encryption!r}.")
    if not isinstance(password, bytes) or not password:
        raise ArchiveError(f"encryption is {encryption!r} but no password was given; set backup.password "
                           "or use encryption: none.")
    return AES_BITS[encryption]


class _ArchiveWriter:
    """Adds members to an open pyzipper archive, recording each member's size and sha256 and each file skipped."""

    def __init__(self, zf: Any, password: bytes | None, nbits: int | None, level: int, skips: SkipTally,
                 sources: ListedFileOpener, open_staged: StagedOpener | None = None) -> None:
        self.zf = zf
        self.open_staged = open_staged
        self.password = password
        self.nbits = nbits
        self.level = level
        self.skips = skips
        self.sources = sources
        self.members: list[MemberInfo] = []
        self.skipped: list[SkippedFile] = []
        self.file_count = 0
        self.file_bytes = 0

    def add_dump(self, dump: DumpResult) -> None:
        # Dumps are compressed by the dump step (gzip/zstd/lz4 or pg_dump's own); never deflate twice.
        what = f"staged dump {dump.staged_path} of database {dump.database}"
        if dump.staged_encryption != "none":
            self.add_sealed(dump, what)
        else:
            self.add_staged(dump.member_name, dump.staged_path, dump.size, dump.sha256, what, deflate=False)
        for extra in dump.extra_members:
            # The roles and settings staged beside it: a few KB of SQL and JSON, which deflate well.
            self.add_staged(extra.member_name, extra.staged_path, extra.size, extra.sha256,
                            f"staged {extra.kind} file {extra.staged_path} of database {dump.database}",
                            deflate=self.level > 0)

    def add_staged(self, name: str, path: str, size: int, sha256: str, what: str, *, deflate: bool) -> None:
        """Archive a file the dump step staged; refuse it when it is not the size the dump step recorded.

        Its bytes are not hashed again here: the dump step hashed them as it wrote them, the manifest
        records that sha256, and the archive's verification decrypts the member and compares (a file
        changed on the staging disk since fails there, before anything is published). One hash where
        the bytes are produced, one check where they land.
        """
        src, st = self.open_source(path, what)
        with src:
            member = self.write_file(name, src, st, what, deflate=deflate, known_sha256=sha256 or None)
        if member.size != size:
            raise ArchiveError(f"The {what} changed after it was dumped: expected {size} bytes, read {member.size}; "
                               "run the backup again.")

    def open_source(self, path: str, what: str) -> tuple[BinaryIO, os.stat_result]:
        """Open a file the dump step staged (a local file, or through ``open_staged``); ArchiveError if it cannot be."""
        try:
            src, st = self.open_staged(path) if self.open_staged else _open_regular(Path(path))
        except OSError as exc:
            raise ArchiveError(f"Cannot read {what}: {exc.strerror or exc}.") from exc
        if src is None:
            raise ArchiveError(f"Cannot archive {what}: it is not a regular file.")
        return src, st

    def add_sealed(self, dump: DumpResult, what: str) -> None:
        """Copy a dump the dump step encrypted as it streamed (``core.sealed_member``) into its member, as it is.

        Nothing is encrypted again: the member's data is the staged file's bytes, behind its local
        header. The key size and password are checked against the archive's (the header's verifier,
        one key derivation), the size against the dump step's record, and the authentication code
        against the ciphertext as it is copied (on a thread beside the copy): the archive step's own
        verification does not recompute codes, since the sha256 taken as the archive is written covers
        them, which holds only for codes checked here. That verification then decrypts the member and
        compares its sha256, as for every member.
        """
        from backup_ops.core.aes_keys import sealed_encrypter
        from backup_ops.core.hashed_writer import SideDigest
        from backup_ops.core.sealed_member import header_length, sealed_mac, sealed_overhead

        if self.nbits is None or self.password is None or dump.staged_encryption != f"aes{self.nbits}":
            raise ArchiveError(
                f"The {what} was encrypted with {dump.staged_encryption} as it was dumped, but the archive is "
                f"{'aes' + str(self.nbits) if self.nbits else 'not encrypted'}: backup.encryption changed during "
                "the run; run the backup again.")
        src, st = self.open_source(dump.staged_path, what)
        with src:
            expected = dump.size + sealed_overhead(self.nbits)
            header = _read_exactly(src, header_length(self.nbits), what)
            if st.st_size != expected:
                raise ArchiveError(f"The {what} changed after it was dumped: expected {expected} bytes, found "
                                   f"{st.st_size}; run the backup again.")
            mac = sealed_mac(header, self.password, self.nbits)
            if mac is None:
                raise ArchiveError(f"The {what} was encrypted with another password than the archive's: "
                                   "backup.password changed during the run; run the backup again.")
            code = SideDigest(mac)
            encrypter = sealed_encrypter(header, self.nbits)
            zinfo = self.new_member(dump.member_name, st.st_mtime, stat.S_IFREG | stat.S_IMODE(st.st_mode),
                                    deflate=False, encrypt=True)
            self.zf.sealed_next = encrypter
            try:
                with self.zf.open(zinfo, "w", force_zip64=True) as dst:
                    try:
                        left = dump.size
                        while left:
                            chunk = _read_exactly(src, min(MEMBER_PIECE, left), what)
                            code.update(chunk)
                            dst.write(chunk)
                            left -= len(chunk)
                        trailer = _read_exactly(src, HMAC_BYTES, what)
                        if src.read(1):
                            raise ArchiveError(f"The {what} changed after it was dumped: it is longer than recorded; "
                                               "run the backup again.")
                        if not hmac.compare_digest(code.digest()[:HMAC_BYTES], trailer):
                            raise ArchiveError(f"The {what} changed after it was dumped: its authentication code does "
                                               "not match its bytes; run the backup again.")
                        encrypter.trailer = trailer
                    except BaseException:
                        # The archive is abandoned: let the member close without a second error over this one.
                        encrypter.trailer = bytes(HMAC_BYTES)
                        raise
            finally:
                self.zf.sealed_next = None
        self.members.append(MemberInfo(dump.member_name, dump.size, dump.sha256, False))

    def add_entry(self, entry: SelectedEntry | SkippedFile) -> None:
        if isinstance(entry, SkippedFile):
            self.skip(entry, announce=False)  # skipped at listing time, and logged there
            return
        if entry.is_dir:
            self.write_directory(entry)
            return
        try:
            opened = self.sources.open(entry)
        except OSError as exc:
            raise ArchiveError(f"Cannot read file {entry.path}: {exc.strerror or exc}.") from exc
        if isinstance(opened, SkippedFile):
            self.skip(opened)
            return
        src, st = opened
        with src:
            member = self.write_file(entry.arcname, src, st, f"file {entry.path}",
                                     deflate=self.level > 0 and not is_precompressed(entry.arcname))
            after = os.fstat(src.fileno())
        self.file_count += 1
        self.file_bytes += member.size
        resized = member.size != st.st_size or after.st_size != st.st_size
        if resized or after.st_mtime_ns != st.st_mtime_ns:
            how = f"{st.st_size} bytes when opened, {after.st_size} when done" if resized else "modified meanwhile"
            self.skip(SkippedFile(
                printable_name(entry.arcname), "changed",
                f"changed while it was being archived ({how}); the archive holds the {member.size} bytes read",
                printable_name(str(entry.path)),
            ))

    def skip(self, skipped: SkippedFile, *, announce: bool = True) -> None:
        """Record ``skipped`` for the manifest; raise at once when its reason is in fail_on."""
        self.skipped.append(skipped)
        if self.skips.add(skipped, announce=announce):
            failure = self.skips.failure()
            if failure is not None:
                raise failure

    def add_manifest(self, make_manifest: Callable[[list[MemberInfo]], dict[str, Any]]) -> bytes:
        data = manifest_bytes(with_skipped(make_manifest(list(self.members)), self.skipped))
        # Read our own manifest back the way a restore will: an archive whose manifest its own
        # restore rejects, or that disagrees with what was written, must never count as a backup.
        try:
            parsed = parse_manifest(data)
        except ArchiveError as exc:
            raise ArchiveError(f"The manifest built for this archive is invalid: {exc}") from exc
        listed = [(m.name, m.size, m.sha256) for m in parsed.members]
        if listed != [(m.name, m.size, m.sha256) for m in self.members]:
            raise ArchiveError("The manifest built for this archive does not list exactly the members written.")
        if [(s.name, s.reason) for s in parsed.skipped] != [(s.name, s.reason) for s in self.skipped]:
            raise ArchiveError("The manifest built for this archive does not list exactly the files skipped.")
        zinfo = self.new_member(MANIFEST_NAME, time.time(), stat.S_IFREG | 0o600,
                                deflate=self.level > 0, encrypt=True, reserved_ok=True)
        with self.zf.open(zinfo, "w", force_zip64=True) as dst:
            dst.write(data)
        return data

    # -- low level

    def write_file(self, name: str, src: BinaryIO, st: os.stat_result, what: str, *, deflate: bool,
                   known_sha256: str | None = None) -> MemberInfo:
        """Add ``src`` as member ``name``, hashing it as it is read, unless its sha256 is ``known_sha256`` already."""
        zinfo = self.new_member(name, st.st_mtime, stat.S_IFREG | stat.S_IMODE(st.st_mode), deflate=deflate,
                                encrypt=True)
        sha = hashlib.sha256() if known_sha256 is None else None
        size = 0
        # Read at most the size seen at open (as tar does): a file that keeps growing, such as a
        # busy log, would otherwise keep the archive open for ever. Shrinking stops early. Either
        # way the member records exactly the bytes written, and the caller warns.
        with self.zf.open(zinfo, "w", force_zip64=True) as dst:
            while size < st.st_size:
                try:
                    chunk = src.read(min(MEMBER_PIECE, st.st_size - size))
                except OSError as exc:
                    raise ArchiveError(f"Reading {what} failed mid-way: {exc.strerror or exc}.") from exc
                if not chunk:
                    break
                if sha is not None:
                    sha.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        member = MemberInfo(name, size, sha.hexdigest() if sha is not None else str(known_sha256), deflate)
        self.members.append(member)
        return member

    def write_directory(self, entry: SelectedEntry) -> None:
        name = entry.member_name
        zinfo = self.new_member(name, entry.mtime, stat.S_IFDIR | (entry.mode or 0o755), deflate=False,
                                encrypt=False)
        self.zf.open(zinfo, "w").close()
        self.members.append(MemberInfo(name, 0, EMPTY_SHA256, False))

    def new_member(self, name: str, mtime: float, mode: int, *, deflate: bool, encrypt: bool,
                   reserved_ok: bool = False) -> Any:
        """Check ``name``, set the archive's encryption for it and return its ZipInfo."""
        import pyzipper

        problem = member_name_problem(name)
        if problem:
            raise ArchiveError(f"Cannot store {name!r} in the archive: the name has {problem}.")
        twin = name[:-1] if name.endswith("/") else name + "/"
        if name in self.zf.NameToInfo or twin in self.zf.NameToInfo or (name == MANIFEST_NAME and not reserved_ok):
            raise ArchiveError(
                f"Two members would be named {name!r} (a file whose archive name equals a dump or {MANIFEST_NAME}); "
                "exclude the file or change source.files.relative_path."
            )
        zinfo = pyzipper.AESZipFile.zipinfo_cls(name, _dos_date_time(mtime))
        zinfo.external_attr = (mode & 0xFFFF) << 16 | (_DOS_DIRECTORY_FLAG if stat.S_ISDIR(mode) else 0)
        zinfo.compress_type = pyzipper.ZIP_DEFLATED if deflate else pyzipper.ZIP_STORED
        # pyzipper reads the per-member level from this private slot; ZipInfo has no public one.
        zinfo._compresslevel = self.level if deflate else None
        if encrypt and self.nbits is not None:
            self.zf.setpassword(self.password)
            self.zf.setencryption(pyzipper.WZ_AES, nbits=self.nbits)
        else:
            # Directory entries hold no data: encrypting them would only add a key derivation each.
            self.zf.setpassword(None)
            self.zf.setencryption(None)
        return zinfo


def _open_regular(path: Path) -> tuple[BinaryIO | None, os.stat_result]:
    """Open ``path`` for reading if it is a regular file; (None, stat) when it is not.

    O_NONBLOCK keeps a FIFO swapped in since selection from hanging the open; fstat after
    opening checks what was actually opened, not what the name pointed to a moment earlier.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None, st
        return os.fdopen(fd, "rb", buffering=0), st
    except BaseException:
        os.close(fd)
        raise


def _read_exactly(src: BinaryIO, size: int, what: str) -> bytes:
    """``size`` bytes of ``src`` (a raw stream may return fewer per read); ArchiveError when it ends before."""
    parts, left = [], size
    while left:
        try:
            chunk = src.read(left)
        except OSError as exc:
            raise ArchiveError(f"Reading {what} failed mid-way: {exc.strerror or exc}.") from exc
        if not chunk:
            raise ArchiveError(f"The {what} changed after it was dumped: it ends early; run the backup again.")
        parts.append(chunk)
        left -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _dos_date_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """Local time for the DOS date field, clamped to the years zip can express (1980–2107)."""
    try:
        t = time.localtime(mtime)
    except (OverflowError, OSError, ValueError):
        t = time.localtime(0 if mtime < 0 else 2**31 - 1)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if t.tm_year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _close_quietly(fd: int) -> None:
    # A close error here is secondary to the error being raised.
    with suppress(OSError):
        os.close(fd)


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
