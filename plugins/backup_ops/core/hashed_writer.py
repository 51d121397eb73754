"""Hash and write a stream's pieces on a thread of their own, in order, beside the thread that makes them.

The archive step encrypts members (pyzipper, ``core.aes_ctr``) while this thread hashes and writes the
archive file (``core.archive_sink``). hashlib and ``os.write`` release the GIL, so on two cores the
hashing and writing cost almost no time on the encrypting thread. (The dump step does not use it: there
compressing and counting hold the GIL, and each hand-over waited for it; measured slower.)

At most ``QUEUED`` pieces wait. The first failure stops the writing; ``put`` and ``drain`` raise it in
the caller's thread, and ``failure`` keeps it. ``close`` (idempotent) writes what is still queued unless
writing failed, and stops the thread: call it whether the stream was finished or abandoned.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable


class HashedWriter:
    """``put`` pieces to be hashed, then passed to ``write``; ``drain`` to wait until they are."""

    QUEUED = 2

    def __init__(self, write: Callable[[bytes], object], *, name: str = "hashed-writer") -> None:
        self.digest = hashlib.sha256()
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
        if self._thread.is_alive():
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
                    self._write(data)
            except BaseException as exc:  # handed to the caller's thread
                self.failure = exc
            finally:
                self._queue.task_done()
