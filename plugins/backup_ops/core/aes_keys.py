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
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

PBKDF2_ITERATIONS = 1000  # fixed by the WinZip AES format
SALT_BYTES = {128: 8, 192: 12, 256: 16}
AES_STRENGTH = {128: 1, 192: 2, 256: 3}  # the AE extra field's strength code
VERIFIER_BYTES = 2
MAX_WORKERS = 4


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
    salt = os.urandom(SALT_BYTES[nbits])
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


def key_pool_zip_file(file: Any, mode: str = "w", **kwargs: Any) -> Any:
    """A pyzipper ``AESZipFile`` whose WinZip AES members take their keys from an AESKeyPool derived ahead.

    The pool starts at the first encrypted member, for the password and key size set with
    ``setpassword``/``setencryption(WZ_AES, nbits=…)``, and stops on ``close()`` or
    ``stop_deriving()`` (idempotent; call it when abandoning the file unclosed). A member with
    other encryption settings gets pyzipper's own encrypter.
    """
    return _pyzipper_hook().zip_file(file, mode, **kwargs)


def prederived_encrypter(key: DerivedKey, nbits: int) -> Any:
    """pyzipper's WinZip AES encrypter for ``key``: AE-2, AES-CTR, and HMAC-SHA1 over the encrypted bytes."""
    return _pyzipper_hook().encrypter(key, nbits)


class _Hook(NamedTuple):
    encrypter: Any
    zip_file: Any


@functools.cache
def _pyzipper_hook() -> _Hook:
    """The two pyzipper subclasses, defined on first use (pyzipper is heavy to import)."""
    from Cryptodome.Cipher import AES
    from Cryptodome.Util import Counter
    from pyzipper.zipfile_aes import WZ_AES, AESZipEncrypter, AESZipFile

    class PrederivedAESEncrypter(AESZipEncrypter):
        """``AESZipEncrypter`` set up from a pre-derived key.

        Its ``__init__`` derives the key itself, so it is not called: this sets the same attributes
        from ``key`` (``tests/unit/test_aes_keys.py`` checks they stay the same set). The HMAC-SHA1 is
        the standard library's (OpenSSL: about 2.7× pycryptodome's speed here, and a cheaper set-up
        per member); the same function, so every reader checks it as before.
        """

        def __init__(self, key: DerivedKey, nbits: int) -> None:
            key_length = nbits // 8
            if len(key.salt) != SALT_BYTES[nbits] or len(key.material) != 2 * key_length + VERIFIER_BYTES:
                raise ValueError(f"The key was derived for another key size than {nbits} bits.")
            self.force_wz_aes_version = None
            self.conditionally_include_crc = None
            self.min_bytes_to_include_crc = None
            self.salt_length = len(key.salt)
            self.aes_strength = AES_STRENGTH[nbits]
            self.salt = key.salt
            self.encpwdverify = key.material[2 * key_length:]
            self.encrypter = AES.new(key.material[:key_length], AES.MODE_CTR,
                                     counter=Counter.new(nbits=128, little_endian=True))
            self.hmac = hmac.new(key.material[key_length:2 * key_length], digestmod="sha1")

    class KeyPoolZipFile(AESZipFile):
        """``AESZipFile`` whose WinZip AES members take their keys from an AESKeyPool (see key_pool_zip_file)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.key_pool: AESKeyPool | None = None

        def get_encrypter(self) -> Any:
            options = self.encryption_kwargs or {}
            nbits = options.get("nbits", 256)
            if self.encryption != WZ_AES or not self.pwd or set(options) - {"nbits"} or nbits not in SALT_BYTES:
                return super().get_encrypter()
            if self.key_pool is None or not self.key_pool.matches(self.pwd, nbits):
                self.stop_deriving()
                self.key_pool = AESKeyPool(self.pwd, nbits)
            return PrederivedAESEncrypter(self.key_pool.take(), nbits)

        def stop_deriving(self) -> None:
            """Stop the key pool and drop its unused keys; idempotent."""
            # getattr: zipfile's __init__ closes the file when it fails, before key_pool is set.
            pool, self.key_pool = getattr(self, "key_pool", None), None
            if pool is not None:
                pool.close()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.stop_deriving()

    return _Hook(PrederivedAESEncrypter, KeyPoolZipFile)
