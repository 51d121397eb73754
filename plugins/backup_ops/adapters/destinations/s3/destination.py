"""S3Destination: the BackupDestination interface on a bucket, wiring the client, uploads and verification.

Objects live at ``<prefix>/<backup_name>/<file>`` in the bucket; every path this class takes or
returns is relative to the destination root (without the prefix), exactly as for a local disk.
Publishing creates the receipt first, with ``If-None-Match: *`` so another run's is never
replaced, and the archive last (see upload.py for how the archive appears atomically and
verify.py for how it is proven to be the bytes published).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, cast

from backup_ops.adapters.destinations.base import (
    PROBE_PREFIX,
    RECEIPT_SUFFIX,
    BackupDestination,
    DrillReportExists,
    Leftover,
    PublishedBackup,
    backup_from_listing,
    clash,
    drill_report_problem,
    receipt_bytes,
    receipt_from_bytes,
    receipt_path,
    receipt_to_compare,
    same_archive,
    sorted_newest_first,
)
from backup_ops.adapters.destinations.s3.bucket import Bucket, client_error, object_size
from backup_ops.adapters.destinations.s3.policy import receipt_args, validate_upload_args
from backup_ops.adapters.destinations.s3.upload import (
    MAX_PART_SIZE,
    MIB,
    MIN_PART_SIZE_MB,
    KeyTaken,
    Uploader,
    part_size_for,
)
from backup_ops.adapters.destinations.s3.verify import METADATA_SHA256, Verifier, integrity_of
from backup_ops.core.drill_report import DRILL_REPORTS_FOLDER, REPORT_SUFFIX
from backup_ops.core.errors import ConfigError, DestinationError, VerificationError
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity, Receipt, is_backup_key

if TYPE_CHECKING:
    from backup_ops.core.config import S3DestinationConfig

log = logging.getLogger(__name__)

MAX_RECEIPT_BYTES = 1 * MIB


class S3Destination(BackupDestination):
    """Backups under ``s3://<bucket>/<prefix>/<backup_name>/`` through the Amazon provider's S3Hook."""

    kind = "s3"

    def __init__(
        self,
        name: str,
        backup_name: str,
        *,
        bucket: str,
        conn_id: str | None = None,
        prefix: str = "",
        upload_args: Mapping[str, Any] | None = None,
        part_size_mb: int = 64,
        max_concurrency: int = 4,
        client: Any = None,
    ) -> None:
        super().__init__(name, backup_name)
        if client is None and not conn_id:
            raise ConfigError(f"Destination {name}: an S3 destination needs conn_id (an Airflow AWS connection).")
        if not MIN_PART_SIZE_MB <= part_size_mb <= MAX_PART_SIZE // MIB:
            raise ConfigError(f"Destination {name}: part_size_mb must be 5–5120 (S3's part size limits), "
                              f"got {part_size_mb!r}.")
        if not 1 <= max_concurrency <= 64:
            raise ConfigError(f"Destination {name}: max_concurrency must be 1–64, got {max_concurrency!r}.")
        prefix = prefix.strip("/")
        if prefix and (".." in prefix.split("/") or "//" in prefix):
            raise ConfigError(f"Destination {name}: prefix must be a plain key prefix like 'backups/prod', "
                              f"got {prefix!r}.")
        self.bucket = bucket
        self.conn_id = conn_id
        self.prefix = prefix
        self.part_size_mb = part_size_mb
        self.max_concurrency = max_concurrency
        args = validate_upload_args(name, upload_args or {})
        owner = args.pop("ExpectedBucketOwner", None)
        self._root = f"{prefix}/" if prefix else ""
        self._folder = f"{self._root}{backup_name}/"
        self._bucket = Bucket(name, bucket, conn_id=conn_id, expected_owner=owner,
                              max_concurrency=max_concurrency, client=client, folder=self._folder)
        self._receipt_args = receipt_args(args)
        self._uploader = Uploader(self._bucket, args, max_concurrency)
        self._verifier = Verifier(self, self._bucket)

    @classmethod
    def from_config(cls, config: S3DestinationConfig, backup_name: str) -> S3Destination:
        """The destination for one validated ``type: s3`` config entry (no connection lookup yet)."""
        return cls(
            config.name,
            backup_name,
            bucket=config.bucket,
            conn_id=config.conn_id,
            prefix=config.prefix,
            upload_args=config.upload_args,
            part_size_mb=config.part_size_mb,
            max_concurrency=config.max_concurrency,
        )

    # -- identity

    def location(self, path: str = "") -> str:
        if not path:
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"s3://{self.bucket}/{self._root}{path}"

    def _object_key(self, path: str) -> str:
        """Bucket key of a destination path, refusing paths that would leave the backup folder."""
        pure = PurePosixPath(path)
        if (path != pure.as_posix() or pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2
                or pure.parts[0] != self.backup_name):
            raise DestinationError(
                f"Destination {self.name}: {path!r} is not a key below {self.backup_name}/; refusing to touch it."
            )
        return self._root + path

    # -- reading

    def check_reachable(self) -> None:
        try:
            self._bucket.client.head_bucket(**self._bucket.args)
        except DestinationError:
            raise
        except Exception as exc:
            code, status, _ = client_error(exc)
            if status == 404 or code in ("404", "NoSuchBucket"):
                raise DestinationError(
                    f"Destination {self.name}: bucket {self.bucket} does not exist at {self._bucket.endpoint}; "
                    "create it or fix the destination's bucket.", retryable=False
                ) from exc
            if status == 301 or code in ("301", "PermanentRedirect"):
                raise DestinationError(
                    f"Destination {self.name}: bucket {self.bucket} is in another region than connection "
                    f"{self.conn_id!r} uses; set region_name in the connection's extra.", retryable=False
                ) from exc
            failure = self._bucket.classify(exc)
            raise DestinationError(
                f"Destination {self.name}: bucket {self.bucket} is not usable: {failure.phrase}.",
                retryable=failure.retryable,
            ) from exc

    def list_backups(self) -> list[BackupFile]:
        folder = self._folder
        found: list[BackupFile] = []
        try:
            pages = self._bucket.client.get_paginator("list_objects_v2").paginate(Prefix=folder,
                                                                                  **self._bucket.args)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if is_backup_key(key):
                        found.append(backup_from_listing(key[len(self._root):], int(obj["Size"]),
                                                         obj["LastModified"]))
        except Exception as exc:
            self._bucket.raise_failure("listing", folder, exc)
        return sorted_newest_first(found)

    def open_backup(self, path: str) -> AbstractContextManager[IO[bytes]]:
        key = self._object_key(path)
        try:
            response = self._bucket.client.get_object(Key=key, **self._bucket.args)
        except Exception as exc:
            if client_error(exc)[0] in ("NoSuchKey", "404"):
                raise DestinationError(
                    f"Destination {self.name}: there is no backup at {self._bucket.url(key)}."
                ) from exc
            self._bucket.raise_failure("opening", key, exc)
        # botocore's StreamingBody is an io.IOBase: readable, closable, usable in a with block.
        return cast(AbstractContextManager[IO[bytes]], response["Body"])

    def read_receipt(self, path: str) -> Receipt | None:
        data = self._receipt_data(path)
        return None if data is None else receipt_from_bytes(data)

    def _receipt_data(self, path: str) -> bytes | None:
        """The receipt's bytes, None when there is none (one too big to be a receipt reads as garbage)."""
        key = self._object_key(receipt_path(path))
        try:
            body = self._bucket.client.get_object(Key=key, **self._bucket.args)["Body"]
            with body:
                data: bytes = body.read(MAX_RECEIPT_BYTES + 1)
        except Exception as exc:
            if client_error(exc)[0] in ("NoSuchKey", "404"):
                return None
            self._bucket.raise_failure("reading receipt", key, exc)
        return b"" if len(data) > MAX_RECEIPT_BYTES else data

    def check_integrity(self, path: str) -> ArchiveIntegrity:
        """The receipt, then one HEAD with checksums: size always, SHA-256 as verify.integrity_of explains."""
        receipt = receipt_to_compare(path, self._receipt_data(path))
        if isinstance(receipt, ArchiveIntegrity):
            return receipt
        key = self._object_key(path)
        try:
            head = self._bucket.head(key)
        except Exception as exc:
            self._bucket.raise_failure("checking", key, exc)
        if head is None:
            return ArchiveIntegrity(path, Integrity.UNVERIFIED, "the archive disappeared while it was checked")
        return integrity_of(path, head, receipt)

    def name_taken(self, file_name: str) -> bool:
        key = self._object_key(self.backup_key(file_name))
        for taken in (key, receipt_path(key)):
            try:
                if self._bucket.head(taken) is not None:
                    return True
            except Exception as exc:
                self._bucket.raise_failure("checking", taken, exc)
        return False

    def recorded_sha256(self, path: str) -> str | None:
        key = self._object_key(path)
        try:
            head = self._bucket.head(key)
        except Exception as exc:
            self._bucket.raise_failure("checking", key, exc)
        value = (head or {}).get("Metadata", {}).get(METADATA_SHA256)
        return str(value) if value else None

    # -- restore-drill reports

    def list_drill_reports(self) -> list[str]:
        folder = f"{self._folder}{DRILL_REPORTS_FOLDER}/"
        keys: list[str] = []
        try:
            pages = self._bucket.client.get_paginator("list_objects_v2").paginate(Prefix=folder, **self._bucket.args)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if key.endswith(REPORT_SUFFIX) and "/" not in key[len(folder):]:
                        keys.append(key[len(self._root):])
        except Exception as exc:
            self._bucket.raise_failure("listing", folder, exc)
        return sorted(keys, reverse=True)

    def read_drill_report(self, key: str, limit: int) -> bytes | None:
        object_key = self._object_key(key)
        try:
            # A Range keeps a huge object planted there from being downloaded whole.
            body = self._bucket.client.get_object(Key=object_key, Range=f"bytes=0-{limit}", **self._bucket.args)["Body"]
            with body:
                data: bytes = body.read(limit + 1)
        except Exception as exc:
            code = client_error(exc)[0]
            if code in ("NoSuchKey", "404"):
                return None
            if code == "InvalidRange":  # an empty object has no byte 0
                return b""
            self._bucket.raise_failure("reading", object_key, exc)
        return data

    def write_drill_report(self, key: str, data: bytes) -> str:
        problem = drill_report_problem(self.backup_name, key)
        if problem:
            raise DestinationError(f"Destination {self.name}: {problem}; refusing to write it.", retryable=False)
        object_key = self._object_key(key)
        request = {"Key": object_key, "Body": data, "ContentType": "application/json", "ChecksumAlgorithm": "SHA256",
                   **self._bucket.args, **self._receipt_args}
        try:
            self._uploader.conditional_write(self._bucket.client.put_object, request, object_key)
        except KeyTaken:
            raise DrillReportExists(f"Destination {self.name}: a restore-drill report is already at "
                                    f"{self._bucket.url(object_key)}; it was not replaced.") from None
        except Exception as exc:
            self._bucket.raise_failure("writing the restore-drill report", object_key, exc)
        return self.location(key)

    # -- writing

    def check_writable(self) -> None:
        """Put and delete a tiny probe object ``<prefix>/<backup_name>/.backup-ops-probe-<random>``.

        It carries the upload args receipts carry (encryption, ACL …), so a bucket policy that
        refuses the backups' writes refuses the probe too. The delete proves what cleanup needs.
        """
        key = f"{self._folder}{PROBE_PREFIX}{secrets.token_hex(8)}"
        try:
            self._bucket.client.put_object(Key=key, Body=b"backup-ops write probe\n", ContentType="text/plain",
                                           **self._bucket.args, **self._receipt_args)
        except Exception as exc:
            self._bucket.raise_failure("writing the probe", key, exc)
        try:
            self._bucket.client.delete_object(Key=key, **self._bucket.args)
        except Exception as exc:
            self._bucket.raise_failure("deleting the probe", key, exc,
                                       "; the probe was written and stays there until deleted by hand")

    def publish(self, source: Path, file_name: str, receipt: Receipt) -> PublishedBackup:
        path = self.backup_key(file_name)
        key = self._object_key(path)
        started = time.monotonic()
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise DestinationError(
                f"Destination {self.name}: cannot read staged archive {source}: {exc.strerror or exc}."
            ) from exc
        if size == 0 or size != receipt.size:
            raise VerificationError(
                f"Destination {self.name}: staged archive {source} is {size} bytes but its receipt says "
                f"{receipt.size}; refusing to publish an empty or changed archive."
            )
        part_size = part_size_for(size, self.part_size_mb)
        try:
            existing = self._bucket.head(key)
        except Exception as exc:
            self._bucket.raise_failure("checking", key, exc, "; nothing was published")
        if existing is not None:
            return self._already_published(source, path, key, receipt, existing, started)

        receipt_key = receipt_path(key)
        self._claim_receipt(path, receipt)  # the name is this run's from here on (or ArchiveNameClash)
        upload_started = time.monotonic()
        try:
            self._uploader.abort_stale_uploads(key)
            sent = self._uploader.upload(source, key, size, part_size, receipt)
        except KeyTaken:
            # Another writer completed this key after our HEAD; compare instead of overwriting.
            taken = self._bucket.head(key)
            if taken is None:
                self._delete_quietly(receipt_key)
                raise DestinationError(
                    f"Destination {self.name}: {self._bucket.url(key)} was written and removed by someone else "
                    "while this upload ran; rerun the backup."
                ) from None
            try:
                return self._already_published(source, path, key, receipt, taken, started)
            except BaseException:
                self._delete_quietly(receipt_key)  # ours describes other bytes than the object now there
                raise
        except BaseException:
            self._delete_quietly(receipt_key)
            raise
        self._verifier.record(key, sent)
        now = time.monotonic()
        log.info("Destination %s: published %s (%d bytes, %d parts, upload %.1f s at %.1f MB/s)", self.name,
                 self.location(path), size, max(1, len(sent.part_digests)), now - upload_started,
                 size / 1e6 / max(now - upload_started, 1e-6))
        return PublishedBackup(self.name, path, self.location(path), size, receipt.sha256, now - started)

    def _already_published(self, source: Path, path: str, key: str, receipt: Receipt, head: dict[str, Any],
                           started: float) -> PublishedBackup:
        """Accept an existing object only when it provably holds the staged archive's bytes."""
        location = self.location(path)
        size = object_size(head)
        same = False
        if size == receipt.size:
            same = self._verifier.existing_matches(source, path, key, receipt, head)
        if not same:
            raise clash(self.name, location, f"an archive of {size} bytes whose content is not provably the same",
                        receipt)
        self._claim_receipt(path, receipt)  # puts back a receipt that went missing
        log.info("Destination %s: %s is already there with the same content; nothing uploaded", self.name, location)
        return PublishedBackup(self.name, path, location, size, receipt.sha256, time.monotonic() - started, True)

    def _claim_receipt(self, path: str, receipt: Receipt) -> None:
        """Create the receipt with If-None-Match: *; an earlier attempt's receipt for the same bytes is kept."""
        receipt_key = self._object_key(receipt_path(path))
        request = {"Key": receipt_key, "Body": receipt_bytes(receipt), "ContentType": "application/json",
                   "ChecksumAlgorithm": "SHA256", **self._bucket.args, **self._receipt_args}
        data = self._receipt_data(path)
        if data is None:
            try:
                self._uploader.conditional_write(self._bucket.client.put_object, request, receipt_key)
                return
            except KeyTaken:
                data = self._receipt_data(path)  # another writer was faster: compare
            except Exception as exc:
                self._bucket.raise_failure("writing receipt", receipt_key, exc, "; nothing was published")
        if not same_archive(None if data is None else receipt_from_bytes(data), receipt):
            raise clash(self.name, self.location(receipt_path(path)), "another run's receipt", receipt)

    def verify_published(self, published: PublishedBackup) -> None:
        self._verifier.verify_published(self._object_key(published.path), published)

    def cancel(self) -> None:
        """Abort the uploads in progress within a few seconds; for a publishing operator's ``on_kill``."""
        self._uploader.cancel()

    # -- deleting

    def delete_backup(self, path: str) -> None:
        if not is_backup_key(path):
            raise DestinationError(f"Destination {self.name}: {path!r} is not a .zip backup; refusing to delete it.")
        self._delete_pair(self._object_key(path))

    def discard(self, published: PublishedBackup) -> None:
        """Remove an archive this run published that then failed verification (and its receipt)."""
        key = self._object_key(published.path)
        self._verifier.forget(key)
        self._delete_pair(key)

    def _delete_pair(self, key: str) -> None:
        """Delete an archive and its receipt in one request; a missing object counts as deleted."""
        objects = [{"Key": key}, {"Key": receipt_path(key)}]
        try:
            response = self._bucket.client.delete_objects(Delete={"Objects": objects, "Quiet": True},
                                                           **self._bucket.args)
        except Exception as exc:
            self._bucket.raise_failure("deleting", key, exc)
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise DestinationError(
                f"Destination {self.name}: deleting s3://{self.bucket}/{first.get('Key')} failed: "
                f"{first.get('Code')}: {first.get('Message')} ({len(errors)} of 2 objects not deleted)."
            )

    def _delete_quietly(self, key: str) -> None:
        try:
            self._bucket.client.delete_object(Key=key, **self._bucket.args)
        except Exception as exc:
            log.warning("Destination %s: could not remove s3://%s/%s after a failed upload: %s; cleanup removes it "
                        "after a day", self.name, self.bucket, key, self._bucket.explain(exc))

    # -- leftovers

    def find_leftovers(self, older_than: datetime) -> list[Leftover]:
        """Multipart uploads below the backup folder started before ``older_than``, and receipts without archives."""
        found: list[Leftover] = []
        try:
            for upload in self._uploader.incomplete_uploads(self._folder):
                if upload["Initiated"] < older_than:
                    found.append(Leftover("incomplete upload", upload["Key"][len(self._root):], upload["Initiated"],
                                          upload["UploadId"]))
            objects: dict[str, datetime] = {}
            pages = self._bucket.client.get_paginator("list_objects_v2").paginate(Prefix=self._folder,
                                                                                  **self._bucket.args)
            for page in pages:
                objects.update((obj["Key"], obj["LastModified"]) for obj in page.get("Contents", ()))
        except Exception as exc:
            self._bucket.raise_failure("looking for leftovers below", self._folder, exc)
        for key, modified in objects.items():
            archive = key[: -len(RECEIPT_SUFFIX)]
            if (key.endswith(RECEIPT_SUFFIX) and is_backup_key(archive) and archive not in objects
                    and modified < older_than):
                found.append(Leftover("orphan receipt", key[len(self._root):], modified))
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        key = self._object_key(leftover.path)
        if leftover.upload_id is not None:
            if not self._uploader.abort(key, leftover.upload_id, "left by a failed publish, found by cleanup"):
                raise DestinationError(f"Destination {self.name}: could not abort upload {leftover.upload_id} of "
                                       f"{self._bucket.url(key)}; see the warning above.")
            return
        try:
            if self._bucket.head(key[: -len(RECEIPT_SUFFIX)]) is not None:
                log.info("Destination %s: %s has its archive now; kept", self.name, leftover.path)
                return
            self._bucket.client.delete_object(Key=key, **self._bucket.args)
        except Exception as exc:
            self._bucket.raise_failure("removing", key, exc)
