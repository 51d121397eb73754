"""Hash and write a stream's pieces on a thread of their own, in order, beside the thread that makes them.

The archive step encrypts members (pyzipper, ``core.aes_ctr``) while this thread hashes and writes the
archive file (``core.archive_sink``); a large member's HMAC-SHA1, and the sha256 the verification takes
of it, run on another (``SideDigest``: no ``write``). hashlib, hmac and ``os.write`` release the GIL, so
on two cores the hashing and writing cost almost no time on the encrypting thread. (The dump step does
not use it: there the whole machine is busy with pg_dump, its server and the compression; measured
slower.)

At most ``QUEUED`` pieces wait. The first failure stops the writing; ``put`` and ``drain`` raise it in
the caller's thread, and ``failure`` keeps it. ``close`` (idempotent) writes what is still queued unless
writing failed, and stops the thread: call it whether the stream was finished or abandoned.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any


class HashedWriter:
    """``put`` pieces to be hashed (``digest``: sha256 unless given), then passed to ``write`` (if any);
    ``drain`` to wait until they are."""

    QUEUED = 2

    def __init__(self, write: Callable[[bytes], object] | None, *, digest: Any = None,
                 name: str = "hashed-writer") -> None:
        self.digest = hashlib.sha256() if digest is None else digest
        self.size = 0  # bytes hashed
        self.failure: BaseException | None = None
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        """Queue ``data`` (bytes that will not change) to be hashed and written; raise an earlier failure."""
        self._raise_failure()
        if data:
            self._queue.put(data)

    def drain(self) -> None:
        """Wait until every piece queued is written; raise the failure if one happened."""
        self._queue.join()
        self._raise_failure()

    def close(self) -> None:
        """Stop the thread once what is queued is written (or dropped, after a failure)."""
        if not self._thread.is_alive():
            return
        if threading.current_thread() is self._thread:  # a SideDigest's finalizer, run by a collection on this thread
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            return
        self._queue.put(None)  # the thread keeps taking pieces, even after a failure: this never blocks long
        self._thread.join()

    def __enter__(self) -> HashedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            try:
                if data is None:
                    return
                if self.failure is None:
                    self.digest.update(data)
                    self.size += len(data)
                    if self._write is not None:
                        self._write(data)
            except BaseException as exc:  # handed to the caller's thread
                self.failure = exc
            finally:
                self._queue.task_done()


class SideDigest:
    """A hashlib or hmac object whose ``update`` moves to a ``HashedWriter`` thread past its first bytes.

    The first ``inline`` bytes are hashed in the caller's thread, so a small member never starts a
    thread; the rest on the thread, in order, while the caller decrypts or encrypts the next piece.
    ``digest`` and ``hexdigest`` wait for the pieces queued and stop the thread; one abandoned before
    its end is stopped when this object is collected. Pieces given to ``update`` must not change
    afterwards. pyzipper's WinZip AES encrypter and decrypter take one as their ``hmac``.
    """

    INLINE = 1 << 20

    def __init__(self, digest: Any, *, inline: int = INLINE) -> None:
        self._digest = digest
        self._inline = inline
        self._side: HashedWriter | None = None

    def update(self, data: bytes) -> None:
        if self._side is not None:
            self._side.put(data)
            return
        self._digest.update(data)
        self._inline -= len(data)
        if self._inline <= 0:
            self._side = HashedWriter(None, digest=self._digest, name="side-digest")
            weakref.finalize(self, self._side.close)

    def digest(self) -> bytes:
        self._finish()
        return self._digest.digest()  # type: ignore[no-any-return]

    def hexdigest(self) -> str:
        self._finish()
        return self._digest.hexdigest()  # type: ignore[no-any-return]

    def _finish(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            try:
                side.drain()
            finally:
                side.close()
