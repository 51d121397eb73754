"""A destination in an S3 bucket (AWS or S3-compatible): atomic multipart publish, verified by SHA-256.

Objects live at ``<prefix>/<backup_name>/<file>`` in the bucket; every path this class takes or
returns is relative to the destination root (without the prefix), exactly as for a local disk.

Atomicity comes from S3 itself: an object becomes visible only when PutObject or
CompleteMultipartUpload succeeds. A failed or interrupted upload is aborted, so nothing appears
at the final key and no billable in-progress upload is left behind; when even the abort cannot
reach the store, the bucket's AbortIncompleteMultipartUpload lifecycle rule and the next publish
to the same key remove it (see docs/s3.md).

Integrity: every part is sent with its SHA-256 (``x-amz-checksum-sha256``), which the store
checks before accepting the part. The object's stored checksum is then either the SHA-256 of the
whole object (single PutObject) or, for a multipart upload, S3's *composite* checksum: the SHA-256
of the concatenated binary part digests, shown as ``<base64>-<parts>``. It depends on the part
size, so this module computes the same composite from the bytes it sent and compares.

What HEAD with ``ChecksumMode=ENABLED`` returns, by store:

* AWS S3: full-object SHA-256 for PutObject, composite ``…-N`` for multipart uploads.
* moto (the tests): the same values, but HEAD drops the ``-N`` suffix that GET shows.
* MinIO, Ceph RGW, R2, other S3-compatible stores: depends on product and version. When a
  store returns no SHA-256, verification falls back to the size the store reports plus the
  SHA-256 recorded in the object's metadata and receipt, and logs that the store itself
  verified the size only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

from backup_ops.adapters.destinations.base import (
    BackupDestination,
    PublishedBackup,
    backup_from_listing,
    is_backup_key,
    receipt_bytes,
    receipt_from_bytes,
    receipt_path,
    sorted_newest_first,
)
from backup_ops.core.errors import BackupError, ConfigError, DestinationError, VerificationError
from backup_ops.core.fileio import sha256_of_stream
from backup_ops.core.models import BackupFile, Receipt

if TYPE_CHECKING:
    from backup_ops.core.config import S3DestinationConfig

log = logging.getLogger(__name__)

MIB = 1 << 20
# S3 allows 10,000 parts; planning for 9,000 leaves headroom should a store count differently.
PART_BUDGET = 9_000
MIN_PART_SIZE_MB = 5
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_RECEIPT_BYTES = 1 * MIB
METADATA_SHA256 = "backup-ops-sha256"
METADATA_PART_SIZE = "backup-ops-part-size"
PROGRESS_LOG_SECONDS = 30.0
# Airflow 3 sends SIGKILL 5 s after the SIGTERM that triggers on_kill; cancelling must finish first.
CANCEL_WAIT_SECONDS = 4.0

# upload_args a user may set, with the accepted values (None: any non-empty string).
# SSE-C is left out on purpose: its key would have to travel with every read and verification.
_CANNED_ACLS = frozenset({
    "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
    "bucket-owner-read", "bucket-owner-full-control",
})
UPLOAD_ARGS: Mapping[str, frozenset[str] | None] = {
    "StorageClass": None,  # stores name their own classes (Ceph, MinIO tiers), so any name passes
    "ServerSideEncryption": frozenset({"AES256", "aws:kms", "aws:kms:dsse"}),
    "SSEKMSKeyId": None,
    "SSEKMSEncryptionContext": None,
    "BucketKeyEnabled": frozenset({"true", "false"}),
    "ACL": _CANNED_ACLS,
    "Tagging": None,
    "ObjectLockLegalHoldStatus": frozenset({"ON", "OFF"}),
    "ExpectedBucketOwner": None,
}
# The receipt must stay readable without a restore and cheap to store, so it gets the archive's
# encryption, ACL and tags (lifecycle rules often filter on tags) but not its storage class.
_RECEIPT_ARGS = frozenset({"ServerSideEncryption", "SSEKMSKeyId", "SSEKMSEncryptionContext",
                           "BucketKeyEnabled", "ACL", "Tagging"})


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


def iam_policy_json(
    bucket: str,
    prefix: str = "",
    upload_args: Mapping[str, str] | None = None,
    kms_key_arn: str | None = None,
    partition: str = "aws",
) -> str:
    """The minimal IAM policy document a destination's credentials need, as indented JSON."""
    prefix = prefix.strip("/")
    objects = f"arn:{partition}:s3:::{bucket}/{prefix}/*" if prefix else f"arn:{partition}:s3:::{bucket}/*"
    object_actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    args = upload_args or {}
    # Each of these headers is authorised as a separate action on top of s3:PutObject.
    for arg, action in (("Tagging", "s3:PutObjectTagging"), ("ACL", "s3:PutObjectAcl"),
                        ("ObjectLockLegalHoldStatus", "s3:PutObjectLegalHold")):
        if arg in args:
            object_actions.append(action)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "BackupOpsBucket",
            "Effect": "Allow",
            # ListBucket: listing backups and HeadBucket; ListBucketMultipartUploads: finding
            # uploads an interrupted earlier attempt left behind, so they can be aborted.
            "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
            "Resource": f"arn:{partition}:s3:::{bucket}",
        },
        {"Sid": "BackupOpsObjects", "Effect": "Allow", "Action": object_actions, "Resource": objects},
    ]
    if kms_key_arn:
        statements.append({
            "Sid": "BackupOpsKms",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": kms_key_arn,
        })
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


def validate_upload_args(destination: str, upload_args: Mapping[str, Any]) -> dict[str, Any]:
    """The upload_args as boto3 parameters; raises ConfigError naming an unknown key or value."""
    result: dict[str, Any] = {}
    for key, raw in upload_args.items():
        if key not in UPLOAD_ARGS:
            raise ConfigError(
                f"Destination {destination}: upload_args has unknown key {key!r}; accepted keys are: "
                f"{', '.join(sorted(UPLOAD_ARGS))}."
            )
        value = str(raw).strip()
        accepted = UPLOAD_ARGS[key]
        check = value.lower() if key == "BucketKeyEnabled" else value
        if not value or (accepted is not None and check not in accepted):
            shown = ", ".join(sorted(accepted)) if accepted else "a non-empty string"
            raise ConfigError(f"Destination {destination}: upload_args.{key} must be {shown}, got {raw!r}.")
        result[key] = check == "true" if key == "BucketKeyEnabled" else value
    if "SSEKMSKeyId" in result and result.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse"):
        raise ConfigError(
            f"Destination {destination}: upload_args.SSEKMSKeyId needs ServerSideEncryption 'aws:kms' or "
            f"'aws:kms:dsse', got {result.get('ServerSideEncryption')!r}."
        )
    return result


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    checksum: str  # base64 SHA-256 of the part, as sent and as the store confirmed


@dataclass(frozen=True)
class _SentChecksums:
    """What this process sent for one object, so a HEAD can prove the store holds exactly that."""

    size: int
    sha256: str                        # hex SHA-256 of the whole object
    part_digests: tuple[bytes, ...]    # raw SHA-256 per part; empty for a single PutObject
    etag: str | None = None

    @property
    def full_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def composite_b64(self) -> str | None:
        if not self.part_digests:
            return None
        return base64.b64encode(hashlib.sha256(b"".join(self.part_digests)).digest()).decode()

    def matches(self, stored: str) -> bool:
        """Whether a store's ChecksumSHA256 (full, or composite with or without ``-N``) is this object's."""
        value = stored.split("-", 1)[0]  # base64 never contains '-', the part count follows one
        return value in (self.full_b64, self.composite_b64)


class _KeyTaken(Exception):
    """A conditional write found an object at the key (someone else completed first)."""


class _Cancelled(Exception):
    """cancel() was called while this publish was uploading."""


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
        # ExpectedBucketOwner guards every request (a bucket taken over by another account must
        # not receive backups), the rest only applies to writes.
        self._bucket_args: dict[str, Any] = {"Bucket": bucket, **({"ExpectedBucketOwner": owner} if owner else {})}
        self._object_args = args
        self._root = f"{prefix}/" if prefix else ""
        self._client_instance = client
        self._client_lock = threading.Lock()
        self._sent: dict[str, _SentChecksums] = {}
        self._conditional_writes = True
        self._cancelled = threading.Event()
        self._uploads_lock = threading.Lock()
        self._in_progress: dict[str, str] = {}  # upload id → key, for cancel()

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

    # -- identity and plumbing

    def location(self, path: str = "") -> str:
        if not path:
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"s3://{self.bucket}/{self._root}{path}"

    @property
    def _client(self) -> Any:
        """The boto3 S3 client, built from the Airflow connection on first use."""
        if self._client_instance is None:
            with self._client_lock:
                if self._client_instance is None:
                    self._client_instance = self._client_from_connection()
        return self._client_instance

    def _client_from_connection(self) -> Any:
        # Imported here: DAG files and the CLI import this module, and must not pay for Airflow or boto3.
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        try:
            hook = S3Hook(aws_conn_id=self.conn_id)
            base = hook.config
            # botocore pools 10 connections; more concurrent part uploads than that would open
            # and drop a connection per request, so size the pool to the upload concurrency.
            pool = max(base.max_pool_connections or 10, self.max_concurrency + 2)
            return hook.get_client_type(region_name=hook.region_name,
                                        config=base.merge(Config(max_pool_connections=pool)))
        except Exception as exc:
            raise DestinationError(
                f"Destination {self.name}: cannot create an S3 client from Airflow connection {self.conn_id!r}: "
                f"{exc}."
            ) from exc

    @property
    def _endpoint(self) -> str:
        try:
            return str(self._client.meta.endpoint_url)
        except Exception:  # only used inside error messages; never mask the real error
            return "(unknown endpoint)"

    def _object_key(self, path: str) -> str:
        """Bucket key of a destination path, refusing paths that would leave the backup folder."""
        pure = PurePosixPath(path)
        if (path != pure.as_posix() or pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2
                or pure.parts[0] != self.backup_name):
            raise DestinationError(
                f"Destination {self.name}: {path!r} is not a key below {self.backup_name}/; refusing to touch it."
            )
        return self._root + path

    def _explain(self, exc: BaseException) -> str:
        """One phrase saying why an S3 call failed, for the end of an error sentence."""
        import botocore.exceptions as bex

        if isinstance(exc, (bex.ConnectionError, bex.HTTPClientError)):
            return f"endpoint {self._endpoint} is unreachable or dropped the connection ({exc})"
        if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
            return f"no usable AWS credentials for connection {self.conn_id!r} ({exc})"
        code, status, message = _client_error(exc)
        if code is None:
            return f"{type(exc).__name__}: {exc}"
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return (f"access denied ({code}: {message}); the credentials need the permissions listed in "
                    "docs/s3.md (s3:ListBucket, s3:ListBucketMultipartUploads, s3:GetObject, s3:PutObject, "
                    "s3:DeleteObject, s3:AbortMultipartUpload)")
        if code == "NoSuchBucket" or (status == 404 and code == "404"):
            return f"bucket {self.bucket} does not exist at {self._endpoint}"
        if status is not None and status >= 500:
            attempts = _attempts(exc)
            return f"the store answered HTTP {status} ({code}: {message}) on all {attempts} attempts"
        return f"{code}: {message}"

    def _raise_failure(self, doing: str, key: str, exc: BaseException, tail: str = "") -> NoReturn:
        """Raise one DestinationError sentence for a failed S3 call; backup-ops' own errors pass unchanged."""
        if isinstance(exc, BackupError):
            raise exc
        raise DestinationError(
            f"Destination {self.name}: {doing} s3://{self.bucket}/{key} failed: {self._explain(exc)}{tail}."
        ) from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        """HeadObject with checksums, or None when there is no object at ``key``."""
        try:
            return cast(dict[str, Any], self._client.head_object(Key=key, ChecksumMode="ENABLED",
                                                                 **self._bucket_args))
        except Exception as exc:
            code, status, _ = _client_error(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    # -- reading

    def check_reachable(self) -> None:
        try:
            self._client.head_bucket(**self._bucket_args)
        except DestinationError:
            raise
        except Exception as exc:
            code, status, _ = _client_error(exc)
            if status == 404 or code in ("404", "NoSuchBucket"):
                raise DestinationError(
                    f"Destination {self.name}: bucket {self.bucket} does not exist at {self._endpoint}; "
                    "create it or fix the destination's bucket."
                ) from exc
            if status == 301 or code in ("301", "PermanentRedirect"):
                raise DestinationError(
                    f"Destination {self.name}: bucket {self.bucket} is in another region than connection "
                    f"{self.conn_id!r} uses; set region_name in the connection's extra."
                ) from exc
            raise DestinationError(
                f"Destination {self.name}: bucket {self.bucket} is not usable: {self._explain(exc)}."
            ) from exc

    def list_backups(self) -> list[BackupFile]:
        folder = f"{self._root}{self.backup_name}/"
        found: list[BackupFile] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Prefix=folder, **self._bucket_args)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if is_backup_key(key):
                        found.append(backup_from_listing(key[len(self._root):], int(obj["Size"]),
                                                         obj["LastModified"]))
        except Exception as exc:
            self._raise_failure("listing", folder, exc)
        return sorted_newest_first(found)

    def open_backup(self, path: str) -> AbstractContextManager[IO[bytes]]:
        key = self._object_key(path)
        try:
            response = self._client.get_object(Key=key, **self._bucket_args)
        except Exception as exc:
            if _client_error(exc)[0] in ("NoSuchKey", "404"):
                raise DestinationError(
                    f"Destination {self.name}: there is no backup at s3://{self.bucket}/{key}."
                ) from exc
            self._raise_failure("opening", key, exc)
        # botocore's StreamingBody is an io.IOBase: readable, closable, usable in a with block.
        return cast(AbstractContextManager[IO[bytes]], response["Body"])

    def read_receipt(self, path: str) -> Receipt | None:
        key = self._object_key(receipt_path(path))
        try:
            body = self._client.get_object(Key=key, **self._bucket_args)["Body"]
            with body:
                data = body.read(MAX_RECEIPT_BYTES + 1)
        except Exception as exc:
            if _client_error(exc)[0] in ("NoSuchKey", "404"):
                return None
            self._raise_failure("reading receipt", key, exc)
        return None if len(data) > MAX_RECEIPT_BYTES else receipt_from_bytes(data)

    # -- writing

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
            existing = self._head(key)
        except Exception as exc:
            self._raise_failure("checking", key, exc, "; nothing was published")
        if existing is not None:
            return self._already_published(source, path, key, receipt, existing, started)

        self._abort_stale_uploads(key)
        receipt_key = receipt_path(key)
        self._put_receipt(key, receipt)
        upload_started = time.monotonic()
        try:
            if size < part_size:
                sent = self._put_whole(source, key, size, receipt)
            else:
                sent = self._put_multipart(source, key, size, part_size, receipt)
        except _KeyTaken:
            # Another writer completed this key after our HEAD; compare instead of overwriting.
            taken = self._head(key)
            if taken is None:
                raise DestinationError(
                    f"Destination {self.name}: s3://{self.bucket}/{key} was written and removed by someone else "
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
        self._sent[key] = sent
        now = time.monotonic()
        log.info("Destination %s: published %s (%d bytes, %d parts, upload %.1f s at %.1f MB/s)", self.name,
                 self.location(path), size, max(1, len(sent.part_digests)), now - upload_started,
                 size / 1e6 / max(now - upload_started, 1e-6))
        return PublishedBackup(self.name, path, self.location(path), size, receipt.sha256, now - started)

    def _object_write_args(self, receipt: Receipt, part_size: int | None) -> dict[str, Any]:
        metadata = {METADATA_SHA256: receipt.sha256}
        if part_size:
            metadata[METADATA_PART_SIZE] = str(part_size)
        return {"ContentType": "application/zip", "Metadata": metadata, "ChecksumAlgorithm": "SHA256",
                **self._bucket_args, **self._object_args}

    def _put_receipt(self, key: str, receipt: Receipt) -> None:
        receipt_key = receipt_path(key)
        try:
            self._client.put_object(Key=receipt_key, Body=receipt_bytes(receipt), ContentType="application/json",
                                    ChecksumAlgorithm="SHA256", **self._bucket_args, **self._receipt_args())
        except Exception as exc:
            self._raise_failure("writing receipt", receipt_key, exc, "; nothing was published")

    def _receipt_args(self) -> dict[str, Any]:
        return {k: v for k, v in self._object_args.items() if k in _RECEIPT_ARGS}

    def _put_whole(self, source: Path, key: str, size: int, receipt: Receipt) -> _SentChecksums:
        """One PutObject for an archive smaller than a part (held in memory, at most one part size)."""
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise DestinationError(
                f"Destination {self.name}: cannot read staged archive {source}: {exc.strerror or exc}."
            ) from exc
        sent = _SentChecksums(len(data), hashlib.sha256(data).hexdigest(), ())
        _check_staged(self.name, source, sent, receipt)
        request = {"Key": key, "Body": data, "ChecksumSHA256": sent.full_b64,
                   **self._object_write_args(receipt, None)}
        try:
            response = self._conditional_write(self._client.put_object, request, key)
        except _KeyTaken:
            if self._store_holds(key, sent):  # our own PUT whose first response was lost
                return sent
            raise
        except Exception as exc:
            if self._store_holds(key, sent):
                return sent
            self._raise_failure("uploading", key, exc,
                                "; nothing was published and earlier backups were not touched")
        return _SentChecksums(sent.size, sent.sha256, (), response.get("ETag"))

    def _put_multipart(self, source: Path, key: str, size: int, part_size: int, receipt: Receipt) -> _SentChecksums:
        """A multipart upload that either completes verified or is aborted, leaving nothing at ``key``."""
        try:
            upload_id = self._client.create_multipart_upload(
                Key=key, **self._object_write_args(receipt, part_size))["UploadId"]
        except Exception as exc:
            self._raise_failure("starting the upload of", key, exc, "; nothing was published")
        with self._uploads_lock:
            self._in_progress[upload_id] = key
        try:
            parts, full_hex = self._upload_parts(source, key, upload_id, size, part_size)
            sent = _SentChecksums(size, full_hex, tuple(base64.b64decode(p.checksum) for p in parts))
            _check_staged(self.name, source, sent, receipt)
            etag = self._complete(key, upload_id, parts, sent)
        except BaseException as exc:
            aborted = self._abort(key, upload_id, type(exc).__name__)
            if not isinstance(exc, Exception) or isinstance(exc, (VerificationError, _KeyTaken)):
                raise  # interrupts stay interrupts; verification errors already say what happened
            if self._cancelled.is_set():
                raise DestinationError(
                    f"Destination {self.name}: publishing s3://{self.bucket}/{key} was cancelled because the task "
                    f"was stopped; the upload was {'aborted' if aborted else 'left to the lifecycle rule'} and "
                    "nothing was published."
                ) from exc
            tail = ("; nothing was published and earlier backups were not touched" if aborted else
                    f"; nothing was published, but upload {upload_id} could not be aborted, so the bucket's "
                    "lifecycle rule or the next publish to this key will remove its parts")
            self._raise_failure("uploading", key, exc, tail)
        finally:
            with self._uploads_lock:
                self._in_progress.pop(upload_id, None)
        return _SentChecksums(sent.size, sent.sha256, sent.part_digests, etag)

    def _upload_parts(self, source: Path, key: str, upload_id: str, size: int,
                      part_size: int) -> tuple[list[_Part], str]:
        """Upload every part, ``max_concurrency`` at a time; returns the parts and the whole file's SHA-256.

        This thread reads the file in order with os.pread, so it can hash the whole archive in one
        pass, and hands each part to a small pool. A part is read only once a slot is free and the
        slot is freed when that part's upload ends, so memory stays near max_concurrency × part size
        whatever the archive's size (64 MiB × 4 = 256 MiB with the defaults).
        """
        whole = hashlib.sha256()
        slots = threading.Semaphore(self.max_concurrency)
        failed = threading.Event()
        futures: list[Future[_Part]] = []
        total_parts = math.ceil(size / part_size)
        last_log = time.monotonic()

        def part_done(future: Future[_Part]) -> None:
            if future.cancelled() or future.exception() is not None:
                failed.set()
            slots.release()

        fd = os.open(source, os.O_RDONLY)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix=f"s3-publish-{self.name}")
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
                    log.info("Destination %s: uploading %s, part %d of %d submitted", self.name, key, number,
                             total_parts)
            parts = [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            os.close(fd)
        return parts, whole.hexdigest()

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> _Part:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        response = self._client.upload_part(Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                                            ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                                            **self._bucket_args)
        stored = response.get("ChecksumSHA256")
        if stored and stored != checksum:  # AWS rejects a bad part itself; this catches stores that do not
            raise VerificationError(
                f"Destination {self.name}: the store recorded SHA-256 {stored} for part {number} of "
                f"s3://{self.bucket}/{key}, but {checksum} was sent; the upload was aborted."
            )
        return _Part(number, response["ETag"], checksum)

    def _complete(self, key: str, upload_id: str, parts: list[_Part], sent: _SentChecksums) -> str | None:
        request = {
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": [{"PartNumber": p.number, "ETag": p.etag, "ChecksumSHA256": p.checksum}
                                          for p in parts]},
            **self._bucket_args,
        }
        try:
            response = self._conditional_write(self._client.complete_multipart_upload, request, key)
        except Exception:
            # botocore retries a completion whose response was lost; the retry then fails (412 or
            # NoSuchUpload) although our object is in place. Only a matching checksum proves that.
            if self._store_holds(key, sent):
                return None
            raise
        return cast(str | None, response.get("ETag"))

    def _conditional_write(self, call: Callable[..., Any], request: dict[str, Any], key: str) -> Any:
        """``call`` with If-None-Match: * so a concurrent writer is never overwritten, where the store allows."""
        if self._conditional_writes:
            try:
                return call(**request, IfNoneMatch="*")
            except Exception as exc:
                code, status, message = _client_error(exc)
                if status == 412 or code == "PreconditionFailed":
                    raise _KeyTaken(key) from exc
                if not _rejects_conditional_header(code, status, message):
                    raise
                log.warning("Destination %s: the store at %s rejects If-None-Match (%s: %s); falling back to "
                            "check-then-write, which cannot stop a concurrent writer", self.name, self._endpoint,
                            code, message)
                self._conditional_writes = False
        if self._head(key) is not None:
            raise _KeyTaken(key)
        return call(**request)

    def _store_holds(self, key: str, sent: _SentChecksums) -> bool:
        """Whether the object at ``key`` is provably the one described by ``sent``."""
        try:
            head = self._head(key)
        except Exception:
            return False
        if head is None or int(head.get("ContentLength", -1)) != sent.size:
            return False
        stored = head.get("ChecksumSHA256")
        if stored:
            return sent.matches(stored)
        return bool(head.get("Metadata", {}).get(METADATA_SHA256) == sent.sha256)

    def _abort(self, key: str, upload_id: str, reason: str) -> bool:
        """Abort a multipart upload (best effort); returns whether the store confirmed it."""
        try:
            self._client.abort_multipart_upload(Key=key, UploadId=upload_id, **self._bucket_args)
        except Exception as exc:
            if _client_error(exc)[0] == "NoSuchUpload":
                return True
            log.warning("Destination %s: could not abort multipart upload %s of s3://%s/%s (%s): %s",
                        self.name, upload_id, self.bucket, key, reason, self._explain(exc))
            return False
        log.info("Destination %s: aborted multipart upload %s of s3://%s/%s (%s)", self.name, upload_id,
                 self.bucket, key, reason)
        return True

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
                self._abort(key, upload_id, "the task was stopped")

        helper = threading.Thread(target=abort_all, name=f"s3-cancel-{self.name}", daemon=True)
        helper.start()
        helper.join(CANCEL_WAIT_SECONDS)

    def _abort_stale_uploads(self, key: str) -> None:
        """Abort in-progress uploads to ``key`` that an earlier, killed attempt left behind.

        Only attempts at this very archive (its name carries the run's timestamp) write to this key,
        and an earlier attempt is dead when a retry runs, so this never disturbs a live upload.
        """
        try:
            response = self._client.list_multipart_uploads(Prefix=key, **self._bucket_args)
        except Exception as exc:
            log.warning("Destination %s: cannot list in-progress uploads of %s (%s); leaving any to the bucket's "
                        "lifecycle rule", self.name, key, self._explain(exc))
            return
        for upload in response.get("Uploads", ()):
            if upload.get("Key") == key:
                log.warning("Destination %s: aborting in-progress upload %s of %s started %s by an earlier attempt",
                            self.name, upload["UploadId"], key, upload.get("Initiated"))
                self._abort(key, upload["UploadId"], "left by an interrupted earlier attempt")

    def _already_published(self, source: Path, path: str, key: str, receipt: Receipt, head: dict[str, Any],
                           started: float) -> PublishedBackup:
        """Accept an existing object only when it provably holds the staged archive's bytes."""
        location = self.location(path)
        size = int(head.get("ContentLength", -1))
        same = False
        if size == receipt.size:
            same = self._existing_matches(source, key, receipt, head)
        if not same:
            raise DestinationError(
                f"Destination {self.name}: {location} already exists with different or unverifiable content "
                f"({size} bytes; the staged archive has {receipt.size}); backup-ops never overwrites an archive, "
                "so nothing was written."
            )
        if self.read_receipt(path) is None:
            self._put_receipt(key, receipt)
        log.info("Destination %s: %s is already there with the same content; nothing uploaded", self.name, location)
        return PublishedBackup(self.name, path, location, size, receipt.sha256, time.monotonic() - started, True)

    def _existing_matches(self, source: Path, key: str, receipt: Receipt, head: dict[str, Any]) -> bool:
        stored = head.get("ChecksumSHA256")
        metadata = head.get("Metadata", {})
        if stored:
            part_size = _existing_part_size(metadata, head)
            sent = _local_checksums(self.name, source, part_size)
            _check_staged(self.name, source, sent, receipt)
            if sent.matches(stored):
                self._sent[key] = _SentChecksums(sent.size, sent.sha256, sent.part_digests, head.get("ETag"))
                return True
            if part_size is not None:
                return False
        # No store checksum (or an unknown part size): trust what backup-ops recorded, since it only
        # completes an upload after the bytes it sent hashed to that value.
        recorded = metadata.get(METADATA_SHA256)
        if recorded is None:
            existing = self.read_receipt(key[len(self._root):])
            recorded = existing.sha256 if existing is not None and existing.size == receipt.size else None
        return recorded == receipt.sha256

    def verify_published(self, published: PublishedBackup) -> None:
        key = self._object_key(published.path)
        where = f"s3://{self.bucket}/{key}"
        try:
            head = self._head(key)
        except Exception as exc:
            raise VerificationError(
                f"Destination {self.name}: cannot read back {where}: {self._explain(exc)}."
            ) from exc
        if head is None:
            raise VerificationError(f"Destination {self.name}: {where} is missing right after it was published.")
        size = int(head.get("ContentLength", -1))
        if size != published.size:
            raise VerificationError(
                f"Destination {self.name}: {where} is {size} bytes but {published.size} were published."
            )
        sent = self._sent.get(key)
        if sent is not None and sent.sha256 != published.sha256:
            sent = None
        stored = head.get("ChecksumSHA256")
        full_b64 = base64.b64encode(bytes.fromhex(published.sha256)).decode()
        if stored:
            if stored.split("-", 1)[0] == full_b64 or (sent is not None and sent.matches(stored)):
                return
            if sent is not None:
                raise VerificationError(
                    f"Destination {self.name}: the store's SHA-256 of {where} ({stored}) is not the one of the "
                    f"bytes uploaded ({sent.composite_b64 or sent.full_b64}); the object was replaced or corrupted."
                )
            # A composite checksum from another process's upload: only the bytes themselves can tell.
            self._verify_by_download(key, published)
            return
        self._verify_without_store_checksum(key, published, head, sent)

    def _verify_without_store_checksum(self, key: str, published: PublishedBackup, head: dict[str, Any],
                                       sent: _SentChecksums | None) -> None:
        where = f"s3://{self.bucket}/{key}"
        if sent is not None and sent.etag and head.get("ETag") != sent.etag:
            raise VerificationError(
                f"Destination {self.name}: {where} has ETag {head.get('ETag')} but the upload produced "
                f"{sent.etag}; the object was replaced."
            )
        recorded = head.get("Metadata", {}).get(METADATA_SHA256)
        receipt = self.read_receipt(published.path)
        for label, value in (("object metadata", recorded), ("receipt", receipt.sha256 if receipt else None)):
            if value is not None and value != published.sha256:
                raise VerificationError(
                    f"Destination {self.name}: the {label} of {where} records SHA-256 {value[:12]}…, but "
                    f"{published.sha256[:12]}… was published."
                )
        log.warning("Destination %s: the store at %s returned no SHA-256 for %s; only the size was verified by the "
                    "store, the SHA-256 comes from backup-ops' own metadata and receipt", self.name, self._endpoint,
                    where)

    def _verify_by_download(self, key: str, published: PublishedBackup) -> None:
        where = f"s3://{self.bucket}/{key}"
        log.info("Destination %s: no upload record for %s in this process; downloading %d bytes to verify it",
                 self.name, where, published.size)
        try:
            with self.open_backup(published.path) as stream:
                digest, size = sha256_of_stream(stream)
        except Exception as exc:
            raise VerificationError(f"Destination {self.name}: cannot read back {where}: {exc}.") from exc
        if (digest, size) != (published.sha256, published.size):
            raise VerificationError(
                f"Destination {self.name}: read-back of {where} does not match what was published ({size} bytes "
                f"sha256 {digest[:12]}… vs {published.size} bytes sha256 {published.sha256[:12]}…)."
            )

    # -- deleting

    def delete_backup(self, path: str) -> None:
        if not is_backup_key(path):
            raise DestinationError(f"Destination {self.name}: {path!r} is not a .zip backup; refusing to delete it.")
        self._delete_pair(self._object_key(path))

    def discard(self, published: PublishedBackup) -> None:
        """Remove an archive this run published that then failed verification (and its receipt)."""
        key = self._object_key(published.path)
        self._sent.pop(key, None)
        self._delete_pair(key)

    def _delete_pair(self, key: str) -> None:
        """Delete an archive and its receipt in one request; a missing object counts as deleted."""
        objects = [{"Key": key}, {"Key": receipt_path(key)}]
        try:
            response = self._client.delete_objects(Delete={"Objects": objects, "Quiet": True}, **self._bucket_args)
        except Exception as exc:
            self._raise_failure("deleting", key, exc)
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise DestinationError(
                f"Destination {self.name}: deleting s3://{self.bucket}/{first.get('Key')} failed: "
                f"{first.get('Code')}: {first.get('Message')} ({len(errors)} of 2 objects not deleted)."
            )

    def _delete_quietly(self, key: str) -> None:
        try:
            self._client.delete_object(Key=key, **self._bucket_args)
        except Exception as exc:
            log.warning("Destination %s: could not remove s3://%s/%s after a failed upload: %s", self.name,
                        self.bucket, key, self._explain(exc))


def _client_error(exc: BaseException) -> tuple[str | None, int | None, str]:
    """(error code, HTTP status, message) of a botocore ClientError; (None, None, '') for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return None, None, ""
    error = response.get("Error") or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code", "")), int(status) if status is not None else None, str(error.get("Message", ""))


def _attempts(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1


def _rejects_conditional_header(code: str | None, status: int | None, message: str) -> bool:
    """Whether a store refused If-None-Match itself (rather than the write)."""
    if status == 501 or code == "NotImplemented":
        return True
    return status == 400 and code in ("InvalidArgument", "InvalidRequest") and "match" in message.lower()


def _check_staged(name: str, source: Path, sent: _SentChecksums, receipt: Receipt) -> None:
    """Refuse to complete an upload whose bytes are not the archive the receipt describes."""
    if (sent.sha256, sent.size) != (receipt.sha256, receipt.size):
        raise VerificationError(
            f"Destination {name}: the staged archive {source} changed before or during the upload (read "
            f"{sent.size} bytes sha256 {sent.sha256[:12]}…, receipt says {receipt.size} bytes sha256 "
            f"{receipt.sha256[:12]}…); nothing was published, rerun the backup."
        )


def _pread_exactly(fd: int, length: int, offset: int, source: Path) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise VerificationError(f"The staged archive {source} shrank while it was uploaded; rerun the backup.")
        data += more
    return data


def _existing_part_size(metadata: Mapping[str, str], head: Mapping[str, Any]) -> int | None:
    """Part size of an existing object as backup-ops recorded it; 0 for a single PutObject; None if unknown."""
    etag = str(head.get("ETag", "")).strip('"')
    if "-" not in etag and not head.get("PartsCount"):
        return 0
    recorded = metadata.get(METADATA_PART_SIZE, "")
    return int(recorded) if recorded.isdigit() and int(recorded) > 0 else None


def _local_checksums(name: str, source: Path, part_size: int | None) -> _SentChecksums:
    """SHA-256 of a local file and, for ``part_size`` > 0, of each of its parts, in one pass."""
    whole = hashlib.sha256()
    digests: list[bytes] = []
    size = 0
    chunk = part_size or MIB
    try:
        with open(source, "rb") as stream:
            while data := stream.read(chunk):
                whole.update(data)
                size += len(data)
                if part_size:
                    digests.append(hashlib.sha256(data).digest())
    except OSError as exc:
        raise DestinationError(f"Destination {name}: cannot read staged archive {source}: {exc.strerror}.") from exc
    return _SentChecksums(size, whole.hexdigest(), tuple(digests))
