"""Uploading an archive so that it appears at its key whole, with the checksums sent, or not at all.

Atomicity comes from S3 itself: an object becomes visible only when PutObject or
CompleteMultipartUpload succeeds. An archive smaller than a part is one PutObject; a larger one
is a multipart upload with at most ``max_concurrency`` parts in flight and in memory. A failed or
interrupted upload is aborted, so nothing appears at the final key and no billable in-progress
upload is left behind; when even the abort cannot reach the store, the bucket's
AbortIncompleteMultipartUpload lifecycle rule and the next publish to the same key remove it
(see docs/s3.md). The final write carries ``If-None-Match: *`` where the store allows it, so an
object another writer completed first is never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from backup_ops.adapters.destinations.s3.bucket import Bucket, client_error
from backup_ops.adapters.destinations.s3.verify import (
    METADATA_PART_SIZE,
    METADATA_SHA256,
    SentChecksums,
    check_staged,
    store_holds,
)
from backup_ops.core.errors import DestinationError, VerificationError
from backup_ops.core.models import Receipt

log = logging.getLogger(__name__)

MIB = 1 << 20
# S3 allows 10,000 parts; planning for 9,000 leaves headroom should a store count differently.
PART_BUDGET = 9_000
MIN_PART_SIZE_MB = 5
MAX_PART_SIZE = 5 * 1024 * MIB
PROGRESS_LOG_SECONDS = 30.0
# Airflow 3 sends SIGKILL 5 s after the SIGTERM that triggers on_kill; cancelling must finish first.
CANCEL_WAIT_SECONDS = 4.0


def part_size_for(size: int, part_size_mb: int) -> int:
    """Bytes per part: at least ``part_size_mb`` MiB, raised so ``size`` fits in 9,000 parts, in whole MiB."""
    wanted = max(part_size_mb * MIB, math.ceil(size / PART_BUDGET))
    part_size = math.ceil(wanted / MIB) * MIB
    if part_size > MAX_PART_SIZE:
        raise DestinationError(
            f"An archive of {size} bytes needs parts of {part_size // MIB} MiB to stay under S3's 10,000-part "
            "limit, but S3 parts are at most 5 GiB; split the backup."
        )
    return part_size


class KeyTaken(Exception):
    """A conditional write found an object at the key (someone else completed first)."""


class _Cancelled(Exception):
    """cancel() was called while this publish was uploading."""


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    checksum: str  # base64 SHA-256 of the part, as sent and as the store confirmed


class Uploader:
    """Writes archives into one bucket with PutObject or a multipart upload, and aborts what it cannot finish."""

    def __init__(self, bucket: Bucket, object_args: Mapping[str, Any], max_concurrency: int) -> None:
        self._bucket = bucket
        self._name = bucket.destination
        self._object_args = object_args
        self._max_concurrency = max_concurrency
        self._conditional_writes = True
        self._cancelled = threading.Event()
        self._uploads_lock = threading.Lock()
        self._in_progress: dict[str, str] = {}  # upload id → key, for cancel()

    def upload(self, source: Path, key: str, size: int, part_size: int, receipt: Receipt) -> SentChecksums:
        """Upload ``source`` to ``key`` in one request or in parts; raises KeyTaken when another writer was first."""
        if size < part_size:
            return self._put_whole(source, key, size, receipt)
        return self._put_multipart(source, key, size, part_size, receipt)

    def cancel(self) -> None:
        """Abort the uploads this destination has in progress; for a publishing operator's ``on_kill``.

        Airflow 3 answers SIGTERM by calling ``on_kill`` and sends SIGKILL a few seconds later, so
        the upload loop cannot be left to notice on its own. The aborts run in a helper thread that
        is waited for at most CANCEL_WAIT_SECONDS: ``on_kill`` runs as a signal handler in the main
        thread, which may be holding a lock of the HTTP connection pool at that moment.
        """
        self._cancelled.set()
        with self._uploads_lock:
            uploads = list(self._in_progress.items())
        if not uploads:
            return

        def abort_all() -> None:
            for upload_id, key in uploads:
                self.abort(key, upload_id, "the task was stopped")

        helper = threading.Thread(target=abort_all, name=f"s3-cancel-{self._name}", daemon=True)
        helper.start()
        helper.join(CANCEL_WAIT_SECONDS)

    def abort_stale_uploads(self, key: str) -> None:
        """Abort in-progress uploads to ``key`` that an earlier, killed attempt left behind.

        Called only once this run holds the key's receipt: then only attempts at this very archive
        write to this key, and an earlier attempt is dead when a retry runs, so this never disturbs
        a live upload (another run's upload to the same name is stopped by the receipt first).
        """
        try:
            response = self._bucket.client.list_multipart_uploads(Prefix=key, **self._bucket.args)
        except Exception as exc:
            log.warning("Destination %s: cannot list in-progress uploads of %s (%s); leaving any to the bucket's "
                        "lifecycle rule", self._name, key, self._bucket.explain(exc))
            return
        for upload in response.get("Uploads", ()):
            if upload.get("Key") == key:
                log.warning("Destination %s: aborting in-progress upload %s of %s started %s by an earlier attempt",
                            self._name, upload["UploadId"], key, upload.get("Initiated"))
                self.abort(key, upload["UploadId"], "left by an interrupted earlier attempt")

    def incomplete_uploads(self, prefix: str) -> list[dict[str, Any]]:
        """Every multipart upload in progress below ``prefix`` (Key, UploadId, Initiated), all pages."""
        uploads: list[dict[str, Any]] = []
        pages = self._bucket.client.get_paginator("list_multipart_uploads").paginate(Prefix=prefix, **self._bucket.args)
        for page in pages:
            uploads.extend(page.get("Uploads", ()))
        return uploads

    def _object_write_args(self, receipt: Receipt, part_size: int | None) -> dict[str, Any]:
        metadata = {METADATA_SHA256: receipt.sha256}
        if part_size:
            metadata[METADATA_PART_SIZE] = str(part_size)
        return {"ContentType": "application/zip", "Metadata": metadata, "ChecksumAlgorithm": "SHA256",
                **self._bucket.args, **self._object_args}

    def _put_whole(self, source: Path, key: str, size: int, receipt: Receipt) -> SentChecksums:
        """One PutObject for an archive smaller than a part (held in memory, at most one part size)."""
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise DestinationError(
                f"Destination {self._name}: cannot read staged archive {source}: {exc.strerror or exc}."
            ) from exc
        sent = SentChecksums(len(data), hashlib.sha256(data).hexdigest(), ())
        check_staged(self._name, source, sent, receipt)
        request = {"Key": key, "Body": data, "ChecksumSHA256": sent.full_b64,
                   **self._object_write_args(receipt, None)}
        try:
            response = self.conditional_write(self._bucket.client.put_object, request, key)
        except KeyTaken:
            if store_holds(self._bucket, key, sent):  # our own PUT whose first response was lost
                return sent
            raise
        except Exception as exc:
            if store_holds(self._bucket, key, sent):
                return sent
            self._bucket.raise_failure("uploading", key, exc,
                                       "; nothing was published and earlier backups were not touched")
        return sent.with_etag(response.get("ETag"))

    def _put_multipart(self, source: Path, key: str, size: int, part_size: int, receipt: Receipt) -> SentChecksums:
        """A multipart upload that either completes verified or is aborted, leaving nothing at ``key``."""
        try:
            upload_id = self._bucket.client.create_multipart_upload(
                Key=key, **self._object_write_args(receipt, part_size))["UploadId"]
        except Exception as exc:
            self._bucket.raise_failure("starting the upload of", key, exc, "; nothing was published")
        with self._uploads_lock:
            self._in_progress[upload_id] = key
        try:
            parts, full_hex = self._upload_parts(source, key, upload_id, size, part_size)
            sent = SentChecksums(size, full_hex, tuple(base64.b64decode(p.checksum) for p in parts))
            check_staged(self._name, source, sent, receipt)
            etag = self._complete(key, upload_id, parts, sent)
        except BaseException as exc:
            aborted = self.abort(key, upload_id, type(exc).__name__)
            if not isinstance(exc, Exception) or isinstance(exc, (VerificationError, KeyTaken)):
                raise  # interrupts stay interrupts; verification errors already say what happened
            if self._cancelled.is_set():
                raise DestinationError(
                    f"Destination {self._name}: publishing {self._bucket.url(key)} was cancelled because the task "
                    f"was stopped; the upload was {'aborted' if aborted else 'left to the lifecycle rule'} and "
                    "nothing was published."
                ) from exc
            tail = ("; nothing was published and earlier backups were not touched" if aborted else
                    f"; nothing was published, but upload {upload_id} could not be aborted, so the bucket's "
                    "lifecycle rule or the next publish to this key will remove its parts")
            self._bucket.raise_failure("uploading", key, exc, tail)
        finally:
            with self._uploads_lock:
                self._in_progress.pop(upload_id, None)
        return sent.with_etag(etag)

    def _upload_parts(self, source: Path, key: str, upload_id: str, size: int,
                      part_size: int) -> tuple[list[_Part], str]:
        """Upload every part, ``max_concurrency`` at a time; returns the parts and the whole file's SHA-256.

        This thread reads the file in order with os.pread, so it can hash the whole archive in one
        pass, and hands each part to a small pool. A part is read only once a slot is free and the
        slot is freed when that part's upload ends, so memory stays near max_concurrency × part size
        whatever the archive's size (64 MiB × 4 = 256 MiB with the defaults).
        """
        whole = hashlib.sha256()
        slots = threading.Semaphore(self._max_concurrency)
        failed = threading.Event()
        futures: list[Future[_Part]] = []
        total_parts = math.ceil(size / part_size)
        last_log = time.monotonic()

        def part_done(future: Future[_Part]) -> None:
            if future.cancelled() or future.exception() is not None:
                failed.set()
            slots.release()

        fd = os.open(source, os.O_RDONLY)
        pool = ThreadPoolExecutor(max_workers=self._max_concurrency, thread_name_prefix=f"s3-publish-{self._name}")
        try:
            for number, offset in enumerate(range(0, size, part_size), start=1):
                slots.acquire()
                if self._cancelled.is_set():
                    raise _Cancelled(key)
                if failed.is_set():
                    break  # stop reading; the failure is raised from its future below
                data = _pread_exactly(fd, min(part_size, size - offset), offset, source)
                whole.update(data)
                future = pool.submit(self._upload_part, key, upload_id, number, data)
                future.add_done_callback(part_done)
                futures.append(future)
                del data  # the pool's work item holds the only reference until the part is sent
                if time.monotonic() - last_log > PROGRESS_LOG_SECONDS:
                    last_log = time.monotonic()
                    log.info("Destination %s: uploading %s, part %d of %d submitted", self._name, key, number,
                             total_parts)
            parts = [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            os.close(fd)
        return parts, whole.hexdigest()

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> _Part:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        response = self._bucket.client.upload_part(Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                                                   ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                                                   **self._bucket.args)
        stored = response.get("ChecksumSHA256")
        if stored and stored != checksum:  # AWS rejects a bad part itself; this catches stores that do not
            raise VerificationError(
                f"Destination {self._name}: the store recorded SHA-256 {stored} for part {number} of "
                f"{self._bucket.url(key)}, but {checksum} was sent; the upload was aborted."
            )
        return _Part(number, response["ETag"], checksum)

    def _complete(self, key: str, upload_id: str, parts: list[_Part], sent: SentChecksums) -> str | None:
        request = {
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": [{"PartNumber": p.number, "ETag": p.etag, "ChecksumSHA256": p.checksum}
                                          for p in parts]},
            **self._bucket.args,
        }
        try:
            response = self.conditional_write(self._bucket.client.complete_multipart_upload, request, key)
        except Exception:
            # botocore retries a completion whose response was lost; the retry then fails (412 or
            # NoSuchUpload) although our object is in place. Only a matching checksum proves that.
            if store_holds(self._bucket, key, sent):
                return None
            raise
        return cast(str | None, response.get("ETag"))

    def conditional_write(self, call: Callable[..., Any], request: dict[str, Any], key: str) -> Any:
        """``call`` with If-None-Match: * so a concurrent writer is never overwritten, where the store allows.

        Raises KeyTaken when an object is at ``key``. A store that rejects the header gets a
        check-then-write fallback (logged once), which cannot stop a writer racing in between.
        """
        if self._conditional_writes:
            try:
                return call(**request, IfNoneMatch="*")
            except Exception as exc:
                code, status, message = client_error(exc)
                if status == 412 or code == "PreconditionFailed":
                    raise KeyTaken(key) from exc
                if not _rejects_conditional_header(code, status, message):
                    raise
                log.warning("Destination %s: the store at %s rejects If-None-Match (%s: %s); falling back to "
                            "check-then-write, which cannot stop a concurrent writer", self._name,
                            self._bucket.endpoint, code, message)
                self._conditional_writes = False
        if self._bucket.head(key) is not None:
            raise KeyTaken(key)
        return call(**request)

    def abort(self, key: str, upload_id: str, reason: str) -> bool:
        """Abort a multipart upload (best effort); returns whether the store confirmed it."""
        try:
            self._bucket.client.abort_multipart_upload(Key=key, UploadId=upload_id, **self._bucket.args)
        except Exception as exc:
            if client_error(exc)[0] == "NoSuchUpload":
                return True
            log.warning("Destination %s: could not abort multipart upload %s of s3://%s/%s (%s): %s",
                        self._name, upload_id, self._bucket.name, key, reason, self._bucket.explain(exc))
            return False
        log.info("Destination %s: aborted multipart upload %s of s3://%s/%s (%s)", self._name, upload_id,
                 self._bucket.name, key, reason)
        return True


def _pread_exactly(fd: int, length: int, offset: int, source: Path) -> bytes:
    """``length`` bytes of ``fd`` at ``offset``; a file that ends early was changed while uploading."""
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise VerificationError(f"The staged archive {source} shrank while it was uploaded; rerun the backup.")
        data += more
    return data


def _rejects_conditional_header(code: str | None, status: int | None, message: str) -> bool:
    """Whether a store refused If-None-Match itself (rather than the write)."""
    if status == 501 or code == "NotImplemented":
        return True
    return status == 400 and code in ("InvalidArgument", "InvalidRequest") and "match" in message.lower()
