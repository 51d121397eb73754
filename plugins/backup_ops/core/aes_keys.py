"""WinZip AES keys derived ahead, in threads, so the archive writer does not wait for PBKDF2 at every member.

WinZip AES (AE-1/AE-2) gives every encrypted member a random salt of its own and derives its keys
from the password and that salt with PBKDF2-HMAC-SHA1 at 1000 iterations: a fixed cost of the
format, about 1–2.5 ms per member on a current CPU, which dominates archives of many small files.
pyzipper derives the keys on the writing thread when a member is opened. They do not depend on
the member, only on a salt nobody has seen yet, so the keys of the next members can be derived
before those are opened: ``hashlib.pbkdf2_hmac`` releases the GIL, and a few threads derive them
while the writer reads, deflates and encrypts the current member.

Nothing about the archive changes: every member still gets a fresh salt from ``os.urandom`` and
keys of its own, in the layout pyzipper writes, so 7-Zip and pyzipper open it as before. The hook
is pyzipper's own: ``AESZipFile.get_encrypter`` builds the encrypter of each member opened for
writing, and the zip file ``key_pool_zip_file`` opens builds it from a pre-derived key. Key material
stays inside these objects: it has no repr, is never logged, and the keys derived but not used are
dropped on close. pyzipper is imported on first use, so importing this module stays cheap.

Reading is the same cost the other way round, and the same zip file class serves it. A member's
salt sits in its local header, before its data, and the central directory gives every header's
offset; so once a reader knows which members it will read in which order (``derive_keys_ahead``),
threads read the next members' salts (``os.pread`` on the archive's descriptor: no shared file
position) and derive their keys while the current member is decrypted. A key is used only for the
salt it was derived from, compared with the salt pyzipper reads when it opens the member; anything
else (a member out of order, a file object without a descriptor, a header the thread could not
read) is derived on the spot as before. The two-byte password verifier is checked per member
exactly as pyzipper checks it, with pyzipper's error. Every member written or read, keyed ahead or
not, is encrypted or decrypted with ``aes_ctr.WinZipCtr`` (OpenSSL's AES, about 3× pycryptodome's CTR
that pyzipper uses) and authenticated with the standard library's HMAC-SHA1, past a member's first
MiB on a thread of its own beside the AES (``hashed_writer.SideDigest``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from backup_ops.core.aes_ctr import WinZipCtr
from backup_ops.core.hashed_writer import SideDigest

PBKDF2_ITERATIONS = 1000  # fixed by the WinZip AES format
SALT_BYTES = {128: 8, 192: 12, 256: 16}
AES_STRENGTH = {128: 1, 192: 2, 256: 3}  # the AE extra field's strength code
VERIFIER_BYTES = 2
MAX_WORKERS = 4
NBITS_OF_STRENGTH = {code: nbits for nbits, code in AES_STRENGTH.items()}
LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header; its name and extra field follow
LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"


class DerivedKey:
    """One member's salt and the key material PBKDF2 derived from it: AES key, HMAC key, password verifier."""

    __slots__ = ("material", "salt")

    def __init__(self, salt: bytes, material: bytes) -> None:
        self.salt = salt
        self.material = material

    def __repr__(self) -> str:
        return f"DerivedKey(salt={len(self.salt)} bytes, material=<{len(self.material)} secret bytes>)"


def derive_key(password: bytes, nbits: int) -> DerivedKey:
    """A fresh random salt and the WinZip AES key material of ``password`` for it (``nbits``: 128, 192, 256)."""
    if nbits not in SALT_BYTES:
        raise ValueError(f"nbits must be 128, 192 or 256, got {nbits!r}.")
    return derive_key_for_salt(password, os.urandom(SALT_BYTES[nbits]), nbits)


def derive_key_for_salt(password: bytes, salt: bytes, nbits: int) -> DerivedKey:
    """The WinZip AES key material of ``password`` for a member's ``salt``: PBKDF2-HMAC-SHA1, 1000 iterations."""
    length = 2 * (nbits // 8) + VERIFIER_BYTES
    return DerivedKey(salt, hashlib.pbkdf2_hmac("sha1", password, salt, PBKDF2_ITERATIONS, length))


def default_workers() -> int:
    """Threads deriving keys: one per CPU, at most MAX_WORKERS (the writer needs little CPU between keys)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


class AESKeyPool:
    """Keys for the next members of one archive, derived ahead by a small thread pool; ``take()`` one per member.

    Derivation starts at the first ``take()``; at most ``ahead`` keys are in flight or ready at a
    time. ``close()`` (or leaving the ``with`` block) cancels what has not started and drops the rest.
    """

    def __init__(self, password: bytes, nbits: int, *, workers: int | None = None, ahead: int | None = None) -> None:
        if not isinstance(password, bytes) or not password:
            raise ValueError("AESKeyPool needs a non-empty password (bytes).")
        if nbits not in SALT_BYTES:
            raise ValueError(f"nbits must be 128, 192 or 256, got {nbits!r}.")
        self.password = password
        self.nbits = nbits
        self.workers = workers if workers is not None else default_workers()
        self.ahead = ahead if ahead is not None else 2 * self.workers
        if self.workers < 1 or self.ahead < 1:
            raise ValueError(f"workers and ahead must be at least 1, got {self.workers} and {self.ahead}.")
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[Future[DerivedKey]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return f"AESKeyPool(nbits={self.nbits}, workers={self.workers}, ahead={self.ahead})"

    def matches(self, password: bytes | None, nbits: int) -> bool:
        """Whether this pool's keys are for ``password`` and ``nbits``."""
        return password is not None and nbits == self.nbits and hmac.compare_digest(password, self.password)

    def take(self) -> DerivedKey:
        """The next key: ready, or being derived (waits for it); asks for another in its place."""
        if self._closed:
            raise RuntimeError("This AESKeyPool is closed.")
        self._fill()
        key = self._pending.popleft().result()
        self._fill()
        return key

    def _fill(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="aes-key")
        while len(self._pending) < self.ahead:
            self._pending.append(self._executor.submit(derive_key, self.password, self.nbits))

    def close(self) -> None:
        """Stop deriving and drop the keys not taken; idempotent."""
        self._closed = True
        pending, self._pending = self._pending, deque()
        for future in pending:
            future.cancel()
        if self._executor is not None:
            # The running derivations finish in a few ms; waiting for them keeps no thread behind.
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> AESKeyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_salt(fd: int, header_offset: int, salt_length: int) -> bytes | None:
    """The salt of the member whose local header is at ``header_offset`` of ``fd``; None if it cannot be read."""
    header = os.pread(fd, LOCAL_HEADER.size, header_offset)
    if len(header) != LOCAL_HEADER.size:
        return None
    fields = LOCAL_HEADER.unpack(header)
    if fields[0] != LOCAL_HEADER_SIGNATURE:
        return None
    salt = os.pread(fd, salt_length, header_offset + LOCAL_HEADER.size + fields[-2] + fields[-1])
    return salt if len(salt) == salt_length else None


def _derive_member_key(fd: int, password: bytes, header_offset: int, nbits: int) -> DerivedKey | None:
    try:
        salt = read_salt(fd, header_offset, SALT_BYTES[nbits])
    except (OSError, OverflowError, ValueError):
        return None  # the reader meets the same problem when it opens the member, and reports it
    return None if salt is None else derive_key_for_salt(password, salt, nbits)


class MemberKeysAhead:
    """The keys of an archive's encrypted members, derived ahead in threads in the order they will be read.

    ``plan(fd, password, members)`` gives the archive's descriptor and the members to be read, in
    order, as (local header offset, key bits); ``material_for`` hands a member's key material to its
    decrypter when its salt matches, and keeps ``ahead`` keys in flight past it. Members skipped by
    the reader are dropped. ``close()`` cancels what has not started and waits for the rest (a few ms).
    A deep queue (8 per thread) keeps the threads busy through runs of tiny members, where the
    reader would otherwise wait for each key.
    """

    def __init__(self, *, workers: int | None = None, ahead: int | None = None) -> None:
        self.workers = workers if workers is not None else default_workers()
        self.ahead = ahead if ahead is not None else 8 * self.workers
        if self.workers < 1 or self.ahead < 1:
            raise ValueError(f"workers and ahead must be at least 1, got {self.workers} and {self.ahead}.")
        self._executor: ThreadPoolExecutor | None = None
        self._fd = -1
        self._password = b""
        self._members: list[tuple[int, int]] = []
        self._index: dict[int, int] = {}
        self._queue: deque[tuple[int, Future[DerivedKey | None]]] = deque()
        self._next = 0

    def __repr__(self) -> str:
        return f"MemberKeysAhead(workers={self.workers}, ahead={self.ahead}, planned={len(self._members)})"

    def plan(self, fd: int, password: bytes, members: Iterable[tuple[int, int]]) -> None:
        """Start deriving the keys of ``members`` ((header offset, nbits), in reading order) of the archive ``fd``."""
        self.close()
        self._fd, self._password = fd, password
        self._members = list(members)
        self._index = {offset: i for i, (offset, _) in enumerate(self._members)}
        self._next = 0
        self._fill()

    def material_for(self, header_offset: int, password: bytes, salt: bytes) -> bytes | None:
        """The key material derived ahead for the member at ``header_offset``, if for ``password`` and ``salt``."""
        i = self._index.get(header_offset)
        if i is None:
            return None
        while self._queue and self._queue[0][0] < i:  # members the reader skipped
            self._queue.popleft()[1].cancel()
        future = self._queue.popleft()[1] if self._queue and self._queue[0][0] == i else None
        self._next = max(self._next, i + 1)
        self._fill()
        key = future.result() if future is not None else None
        if key is None or not hmac.compare_digest(password, self._password) \
                or not hmac.compare_digest(key.salt, salt):
            return None
        return key.material

    def _fill(self) -> None:
        while len(self._queue) < self.ahead and self._next < len(self._members):
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="aes-key-read")
            offset, nbits = self._members[self._next]
            self._queue.append((self._next, self._executor.submit(_derive_member_key, self._fd, self._password,
                                                                  offset, nbits)))
            self._next += 1

    def close(self) -> None:
        """Stop deriving and drop the keys not used; idempotent. Call it before the archive's file is closed."""
        queue, self._queue = self._queue, deque()
        for _, future in queue:
            future.cancel()
        self._members, self._index, self._password, self._next = [], {}, b"", 0
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def key_pool_zip_file(file: Any, mode: str = "w", **kwargs: Any) -> Any:
    """A pyzipper ``AESZipFile`` whose WinZip AES members take their keys from threads deriving ahead.

    Writing: the pool starts at the first encrypted member, for the password and key size set with
    ``setpassword``/``setencryption(WZ_AES, nbits=…)``. A member with other encryption settings
    gets pyzipper's own encrypter. Reading (``mode="r"``): every WinZip AES member is decrypted with
    the standard library's HMAC-SHA1; after ``derive_keys_ahead(infos)`` (the members about to be
    read, in order) their keys are derived in threads, with the password set by ``setpassword``.
    Both stop on ``close()`` or ``stop_deriving()`` (idempotent; call it when abandoning the file unclosed).
    """
    return _pyzipper_hook().zip_file(file, mode, **kwargs)


def prederived_encrypter(key: DerivedKey, nbits: int) -> Any:
    """pyzipper's WinZip AES encrypter for ``key``: AE-2, AES-CTR, and HMAC-SHA1 over the encrypted bytes."""
    return _pyzipper_hook().encrypter(key, nbits)


def sealed_encrypter(header: bytes, nbits: int) -> Any:
    """pyzipper's WinZip AES encrypter for a member whose bytes were encrypted already (``core.sealed_member``).

    It writes ``header`` (salt and verifier) as the encryption header, passes the ciphertext written
    through unchanged, and writes the authentication code set as its ``trailer`` before the member is closed.
    """
    return _pyzipper_hook().sealed(header, nbits)


def prederived_decrypter(zinfo: Any, pwd: bytes, encryption_header: bytes, material: bytes | None = None) -> Any:
    """pyzipper's WinZip AES decrypter for one member, from ``material`` (derived here when None)."""
    return _pyzipper_hook().decrypter(zinfo, pwd, encryption_header, material)


class _Hook(NamedTuple):
    encrypter: Any
    decrypter: Any
    zip_file: Any
    sealed: Any


@functools.cache
def _pyzipper_hook() -> _Hook:
    """The pyzipper subclasses, defined on first use (pyzipper is heavy to import)."""
    from pyzipper.zipfile import BadZipFile, _ZipWriteFile
    from pyzipper.zipfile_aes import (
        WZ_AES,
        WZ_AES_V2,
        WZ_KEY_LENGTHS,
        WZ_SALT_LENGTHS,
        AESZipDecrypter,
        AESZipEncrypter,
        AESZipExtFile,
        AESZipFile,
    )

    def _set_header(encrypter: AESZipEncrypter, salt: bytes, verifier: bytes, nbits: int) -> None:
        """The attributes ``AESZipEncrypter.__init__`` sets besides its cipher and HMAC (the encryption header's)."""
        encrypter.force_wz_aes_version = None
        encrypter.conditionally_include_crc = None
        encrypter.min_bytes_to_include_crc = None
        encrypter.salt_length = len(salt)
        encrypter.aes_strength = AES_STRENGTH[nbits]
        encrypter.salt = salt
        encrypter.encpwdverify = verifier

    class PrederivedAESEncrypter(AESZipEncrypter):
        """``AESZipEncrypter`` set up from a pre-derived key.

        Its ``__init__`` derives the key itself, so it is not called: this sets the same attributes
        from ``key`` (``tests/unit/test_aes_keys.py`` checks they stay the same set). The AES-CTR is
        ``WinZipCtr`` and the HMAC-SHA1 the standard library's (both OpenSSL: about 3× and 2.7×
        pycryptodome's speed here, and a cheaper set-up per member); the same functions, so every
        reader checks them as before.
        """

        def __init__(self, key: DerivedKey, nbits: int) -> None:
            key_length = nbits // 8
            if len(key.salt) != SALT_BYTES[nbits] or len(key.material) != 2 * key_length + VERIFIER_BYTES:
                raise ValueError(f"The key was derived for another key size than {nbits} bits.")
            _set_header(self, key.salt, key.material[2 * key_length:], nbits)
            self.encrypter = WinZipCtr(key.material[:key_length])
            self.hmac = SideDigest(hmac.new(key.material[key_length:2 * key_length], digestmod="sha1"))

    class SealedAESEncrypter(AESZipEncrypter):
        """``AESZipEncrypter`` for bytes encrypted already: see ``sealed_encrypter``."""

        def __init__(self, header: bytes, nbits: int) -> None:
            if len(header) != SALT_BYTES[nbits] + VERIFIER_BYTES:
                raise ValueError(f"A sealed member's header is {SALT_BYTES[nbits] + VERIFIER_BYTES} bytes at {nbits} "
                                 f"bits, not {len(header)}.")
            _set_header(self, header[:SALT_BYTES[nbits]], header[SALT_BYTES[nbits]:], nbits)
            self.trailer: bytes | None = None

        def encrypt(self, data: bytes) -> bytes:
            return data

        def flush(self) -> bytes:
            if self.trailer is None or len(self.trailer) != self.hmac_size:
                raise ValueError("The sealed member's authentication code was not set before it was closed.")
            return self.trailer

    class PrederivedAESDecrypter(AESZipDecrypter):
        """``AESZipDecrypter`` from key material derived ahead (or here), with the standard library's HMAC-SHA1.

        Its ``__init__`` derives with pycryptodome's PBKDF2 and HMAC, so it is not called: this sets
        the same attributes (``tests/unit/test_aes_keys.py`` checks they stay the same set) and checks
        the password verifier the same way, with the same error. It decrypts with ``WinZipCtr``;
        ``decrypt`` and the HMAC check at the end are pyzipper's own methods.
        """

        def __init__(self, zinfo: Any, pwd: bytes, encryption_header: bytes, material: bytes | None = None) -> None:
            self.filename = zinfo.filename
            key_length = WZ_KEY_LENGTHS[zinfo.wz_aes_strength]
            salt_length = WZ_SALT_LENGTHS[zinfo.wz_aes_strength]
            # As pyzipper: a header cut short (truncated archive) fails here with struct.error.
            salt = struct.unpack(f"<{salt_length}s", encryption_header[:salt_length])[0]
            if material is None or len(material) != 2 * key_length + VERIFIER_BYTES:
                material = derive_key_for_salt(pwd, salt, 8 * key_length).material
            if material[2 * key_length:] != encryption_header[salt_length:]:
                raise RuntimeError(f"Bad password for file {zinfo.filename!r}")  # pyzipper's sentence
            self.decypter = WinZipCtr(material[:key_length])
            self.hmac = SideDigest(hmac.new(material[key_length:2 * key_length], digestmod="sha1"))

    class UnauthenticatedAESDecrypter(PrederivedAESDecrypter):
        """PrederivedAESDecrypter that decrypts without computing or checking the HMAC-SHA1.

        Only for an archive whose sha256 the caller proves against the one its writer computed as it
        wrote it (see ``KeyPoolZipFile.trust_writer_sha256``): that sha256 covers the ciphertext and
        its stored authentication code, so computing the code again proves nothing more.
        """

        def decrypt(self, data: bytes) -> bytearray:
            return self.decypter.decrypt(data)  # type: ignore[no-any-return]

        def check_hmac(self, hmac_check: bytes) -> None:
            if len(hmac_check) != self.hmac_size:  # still refuse a member cut before its code
                raise BadZipFile(f"The authentication code of {self.filename!r} is cut short.")

    class PrederivedAESExtFile(AESZipExtFile):
        """``AESZipExtFile`` whose WinZip AES decrypter is PrederivedAESDecrypter, keyed ahead when it can be."""

        def __init__(self, *args: Any, keys_ahead: MemberKeysAhead | None = None, authenticate: bool = True,
                     **kwargs: Any) -> None:
            self._keys_ahead = keys_ahead
            self._authenticate = authenticate
            super().__init__(*args, **kwargs)

        def setup_aeszipdecrypter(self) -> Any:
            super().setup_aeszipdecrypter()  # reads the salt and verifier, adjusts the sizes
            return PrederivedAESDecrypter

        def get_decrypter(self) -> Any:
            if self._decrypter_cls is not PrederivedAESDecrypter:
                return super().get_decrypter()
            salt = self.encryption_header[:WZ_SALT_LENGTHS[self._zinfo.wz_aes_strength]]
            material = None
            if self._keys_ahead is not None and self._pwd:
                material = self._keys_ahead.material_for(self._zinfo.header_offset, self._pwd, salt)
            decrypter = PrederivedAESDecrypter if self._authenticate else UnauthenticatedAESDecrypter
            return decrypter(self._zinfo, self._pwd, self.encryption_header, material)

        def _update_crc(self, newdata: bytes) -> None:
            # An AE-2 member records CRC 0 and pyzipper's check_integrity then checks only the HMAC:
            # the running CRC it would compute is never compared, so it is not computed.
            if self._zinfo.wz_aes_version == WZ_AES_V2 and not self._expected_crc:
                return
            super()._update_crc(newdata)

    class AE2WriteFile(_ZipWriteFile):  # type: ignore[misc]
        """``_ZipWriteFile`` that skips the CRC-32 of the members this module's encrypters write.

        They are AE-2 (neither sets ``force_wz_aes_version`` nor ``conditionally_include_crc``), which
        records CRC 0 and leaves integrity to the HMAC: pyzipper would compute the CRC and throw it away.
        """

        def write(self, data: Any) -> int:
            if not isinstance(self._encrypter, (PrederivedAESEncrypter, SealedAESEncrypter)):
                return super().write(data)  # type: ignore[no-any-return]
            if self.closed:
                raise ValueError("I/O operation on closed file.")
            self._file_size += len(data)
            piece = self._compressor.compress(data) if self._compressor else data
            piece = self._encrypter.encrypt(piece)
            self._compress_size += len(piece)
            self._fileobj.write(piece)
            return len(data)

    class KeyPoolZipFile(AESZipFile):
        """``AESZipFile`` whose WinZip AES keys are derived ahead in threads (see key_pool_zip_file)."""

        zipwritefile_cls = AE2WriteFile

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # Before zipfile's __init__, which closes the file through close() when it fails.
            self.keys_ahead = MemberKeysAhead()
            self.zipextfile_cls = functools.partial(PrederivedAESExtFile, keys_ahead=self.keys_ahead)
            super().__init__(*args, **kwargs)
            self.key_pool: AESKeyPool | None = None
            self.sealed_next: Any = None  # the next member opened for writing is written through it (sealed)

        def trust_writer_sha256(self) -> None:
            """Read members without their HMAC-SHA1: the caller compares the file's sha256 with its writer's.

            That sha256 was taken as the archive was written, over every byte, authentication codes
            included; a file that matches it holds the codes its writer computed over this very
            ciphertext. Never for a sha256 read from beside the archive (a receipt), which whoever
            could replace the archive could replace too: AES-CTR without its code is malleable.
            """
            self.zipextfile_cls = functools.partial(PrederivedAESExtFile, keys_ahead=self.keys_ahead,
                                                    authenticate=False)

        def derive_keys_ahead(self, infos: Iterable[Any]) -> None:
            """Derive the keys of these members (about to be read, in this order) in threads, from here on."""
            try:
                fd = self.fp.fileno()
            except (AttributeError, OSError, ValueError):
                return  # a file object without a descriptor: keys are derived as members are opened
            if not self.pwd or self.mode != "r":
                return
            self.keys_ahead.plan(fd, self.pwd, [
                (info.header_offset, NBITS_OF_STRENGTH[info.wz_aes_strength]) for info in infos
                if info.flag_bits & 0x1 and info.wz_aes_strength in NBITS_OF_STRENGTH
            ])

        def get_encrypter(self) -> Any:
            sealed, self.sealed_next = self.sealed_next, None
            if sealed is not None:
                return sealed
            options = self.encryption_kwargs or {}
            nbits = options.get("nbits", 256)
            if self.encryption != WZ_AES or not self.pwd or set(options) - {"nbits"} or nbits not in SALT_BYTES:
                return super().get_encrypter()
            if self.key_pool is None or not self.key_pool.matches(self.pwd, nbits):
                self.stop_deriving()
                self.key_pool = AESKeyPool(self.pwd, nbits)
            return PrederivedAESEncrypter(self.key_pool.take(), nbits)

        def stop_deriving(self) -> None:
            """Stop deriving keys (for reading and writing) and drop the unused ones; idempotent."""
            self.keys_ahead.close()
            # getattr: zipfile's __init__ closes the file when it fails, before key_pool is set.
            pool, self.key_pool = getattr(self, "key_pool", None), None
            if pool is not None:
                pool.close()

        def close(self) -> None:
            self.keys_ahead.close()  # before the file closes: its threads read salts from it
            try:
                super().close()
            finally:
                self.stop_deriving()

    return _Hook(PrederivedAESEncrypter, PrederivedAESDecrypter, KeyPoolZipFile, SealedAESEncrypter)
