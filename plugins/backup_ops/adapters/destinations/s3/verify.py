"""Proving that what the store holds is exactly the bytes published, by the cheapest sound path.

Every part is sent with its SHA-256 (``x-amz-checksum-sha256``), which the store checks before
accepting the part. The object's stored checksum is then either the SHA-256 of the whole object
(single PutObject) or, for a multipart upload, S3's *composite* checksum: the SHA-256 of the
concatenated binary part digests, shown as ``<base64>-<parts>``. It depends on the part size, so
this module computes the same composite from the bytes sent and compares.

What HEAD with ``ChecksumMode=ENABLED`` returns, by store:

* AWS S3: full-object SHA-256 for PutObject, composite ``…-N`` for multipart uploads.
* moto (the tests): the same values, but HEAD drops the ``-N`` suffix that GET shows.
* MinIO, Ceph RGW, R2, other S3-compatible stores: depends on product and version. When a
  store returns no SHA-256, verification falls back to the size the store reports plus the
  SHA-256 recorded in the object's metadata and receipt, and logs that the store itself
  verified the size only.

``Verifier.verify_published`` first needs the object there with the published size, then takes
the first path that applies:

1. The store reports a full-object SHA-256 (a single PutObject, by any process): it must be the
   published SHA-256. Proven by the store, nothing downloaded.
2. The store reports a composite checksum and this process uploaded the object (an upload
   record): it must be the composite of the part digests sent, else the object "was replaced or
   corrupted".
3. The store reports a composite checksum but this process has no upload record (a fresh
   destination object, e.g. another task verifying): the object is downloaded and hashed.
4. The store reports no SHA-256: the ETag must be the upload's, and the SHA-256 in the object's
   metadata and in its receipt must not contradict the published one; a warning says the store
   verified the size only.

``integrity_of`` checks an archive against its receipt without downloading it (cleanup and
``list`` use it): the size always; the SHA-256 where the store's checksum is the whole object's
(single PutObject). A multipart object's composite checksum is a hash of part hashes: it cannot be
derived from the receipt's whole-file SHA-256 without reading the bytes (knowing the part size
from the metadata only tells how the bytes were cut, not their part hashes), so there the SHA-256
backup-ops recorded in the object's metadata at upload must equal the receipt's.

Two more checks run while publishing, before there is an upload record to compare with:

5. ``Verifier.existing_matches``: an object is already at the key (a task retry, or a concurrent
   writer). The staged file is hashed with the part size recorded in the object's metadata and
   compared with the store's checksum (a match becomes the upload record); with no store
   checksum, or an unknown part size, the SHA-256 in the metadata, else the receipt, decides.
   ``store_holds``: a write whose response was lost (botocore retried a completion that had
   succeeded) counts as done only when size and the store's checksum, or else the metadata's
   SHA-256, are those of the bytes sent.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backup_ops.adapters.destinations.base import (
    BackupDestination,
    PublishedBackup,
    sha256_verdict,
    size_differs,
)
from backup_ops.adapters.destinations.s3.bucket import Bucket, object_size
from backup_ops.core.errors import DestinationError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE, sha256_of_stream
from backup_ops.core.models import ArchiveIntegrity, Integrity, Receipt

log = logging.getLogger(__name__)

METADATA_SHA256 = "backup-ops-sha256"
METADATA_PART_SIZE = "backup-ops-part-size"


@dataclass(frozen=True)
class SentChecksums:
    """What this process sent for one object, so a HEAD can prove the store holds exactly that."""

    size: int
    sha256: str                        # hex SHA-256 of the whole object
    part_digests: tuple[bytes, ...]    # raw SHA-256 per part; empty for a single PutObject
    etag: str | None = None

    @property
    def full_b64(self) -> str:
        return _sha256_b64(self.sha256)

    @property
    def composite_b64(self) -> str | None:
        if not self.part_digests:
            return None
        return base64.b64encode(hashlib.sha256(b"".join(self.part_digests)).digest()).decode()

    def matches(self, stored: str) -> bool:
        """Whether a store's ChecksumSHA256 (full, or composite with or without ``-N``) is this object's."""
        return _checksum_value(stored) in (self.full_b64, self.composite_b64)

    def with_etag(self, etag: str | None) -> SentChecksums:
        """The same checksums with the ETag the store answered."""
        return replace(self, etag=etag)


def check_staged(name: str, source: Path, sent: SentChecksums, receipt: Receipt) -> None:
    """Refuse to complete an upload whose bytes are not the archive the receipt describes."""
    if (sent.sha256, sent.size) != (receipt.sha256, receipt.size):
        raise VerificationError(
            f"Destination {name}: the staged archive {source} changed before or during the upload (read "
            f"{sent.size} bytes sha256 {sent.sha256[:12]}…, receipt says {receipt.size} bytes sha256 "
            f"{receipt.sha256[:12]}…); nothing was published, rerun the backup."
        )


class Verifier:
    """Remembers what this process uploaded to one destination and proves objects hold exactly those bytes."""

    def __init__(self, destination: BackupDestination, bucket: Bucket) -> None:
        self._destination = destination  # reads back receipts and archives, as a restore would
        self._bucket = bucket
        self._sent: dict[str, SentChecksums] = {}

    def record(self, key: str, sent: SentChecksums) -> None:
        """Remember what this process sent for ``key``, for verify_published."""
        self._sent[key] = sent

    def forget(self, key: str) -> None:
        """Drop the upload record of ``key`` (its object is being removed)."""
        self._sent.pop(key, None)

    def verify_published(self, key: str, published: PublishedBackup) -> None:
        """Raise VerificationError unless the object at ``key`` has ``published``'s size and SHA-256 (paths 1–4)."""
        name = self._destination.name
        where = self._bucket.url(key)
        try:
            head = self._bucket.head(key)
        except Exception as exc:
            raise VerificationError(
                f"Destination {name}: cannot read back {where}: {self._bucket.explain(exc)}."
            ) from exc
        if head is None:
            raise VerificationError(f"Destination {name}: {where} is missing right after it was published.")
        size = object_size(head)
        if size != published.size:
            raise VerificationError(
                f"Destination {name}: {where} is {size} bytes but {published.size} were published."
            )
        sent = self._sent.get(key)
        if sent is not None and sent.sha256 != published.sha256:
            sent = None
        stored = head.get("ChecksumSHA256")
        full_b64 = _sha256_b64(published.sha256)
        if stored:
            if _checksum_value(stored) == full_b64 or (sent is not None and sent.matches(stored)):
                return  # paths 1 and 2
            if sent is not None:
                raise VerificationError(
                    f"Destination {name}: the store's SHA-256 of {where} ({stored}) is not the one of the "
                    f"bytes uploaded ({sent.composite_b64 or sent.full_b64}); the object was replaced or corrupted."
                )
            # A composite checksum from another process's upload: only the bytes themselves can tell.
            self._verify_by_download(key, published)
            return
        self._verify_without_store_checksum(key, published, head, sent)

    def _verify_by_download(self, key: str, published: PublishedBackup) -> None:
        """Path 3: download the object and hash it."""
        name = self._destination.name
        where = self._bucket.url(key)
        log.info("Destination %s: no upload record for %s in this process; downloading %d bytes to verify it",
                 name, where, published.size)
        try:
            with self._destination.open_backup(published.path) as stream:
                digest, size = sha256_of_stream(stream)
        except Exception as exc:
            raise VerificationError(f"Destination {name}: cannot read back {where}: {exc}.") from exc
        if (digest, size) != (published.sha256, published.size):
            raise VerificationError(
                f"Destination {name}: read-back of {where} does not match what was published ({size} bytes "
                f"sha256 {digest[:12]}… vs {published.size} bytes sha256 {published.sha256[:12]}…)."
            )

    def _verify_without_store_checksum(self, key: str, published: PublishedBackup, head: dict[str, Any],
                                       sent: SentChecksums | None) -> None:
        """Path 4: the upload's ETag, and backup-ops' own metadata and receipt, must agree with what was published."""
        name = self._destination.name
        where = self._bucket.url(key)
        if sent is not None and sent.etag and head.get("ETag") != sent.etag:
            raise VerificationError(
                f"Destination {name}: {where} has ETag {head.get('ETag')} but the upload produced "
                f"{sent.etag}; the object was replaced."
            )
        recorded = _recorded_sha256(head)
        receipt = self._destination.read_receipt(published.path)
        for label, value in (("object metadata", recorded), ("receipt", receipt.sha256 if receipt else None)):
            if value is not None and value != published.sha256:
                raise VerificationError(
                    f"Destination {name}: the {label} of {where} records SHA-256 {value[:12]}…, but "
                    f"{published.sha256[:12]}… was published."
                )
        log.warning("Destination %s: the store at %s returned no SHA-256 for %s; only the size was verified by the "
                    "store, the SHA-256 comes from backup-ops' own metadata and receipt", name, self._bucket.endpoint,
                    where)

    def existing_matches(self, source: Path, path: str, key: str, receipt: Receipt, head: dict[str, Any]) -> bool:
        """Path 5: whether the object already at ``key`` (archive ``path``) holds the staged archive's bytes."""
        name = self._destination.name
        stored = head.get("ChecksumSHA256")
        metadata = head.get("Metadata", {})
        if stored:
            part_size = _existing_part_size(metadata, head)
            sent = _local_checksums(name, source, part_size)
            check_staged(name, source, sent, receipt)
            if sent.matches(stored):
                self._sent[key] = sent.with_etag(head.get("ETag"))
                return True
            if part_size is not None:
                return False
        # No store checksum (or an unknown part size): trust what backup-ops recorded, since it only
        # completes an upload after the bytes it sent hashed to that value.
        recorded = _recorded_sha256(head)
        if recorded is None:
            existing = self._destination.read_receipt(path)
            recorded = existing.sha256 if existing is not None and existing.size == receipt.size else None
        return recorded == receipt.sha256


def integrity_of(path: str, head: dict[str, Any], receipt: Receipt) -> ArchiveIntegrity:
    """An object's integrity against its receipt from one HEAD with ChecksumMode=ENABLED (nothing downloaded)."""
    wrong_size = size_differs(path, object_size(head), receipt)
    if wrong_size is not None:
        return wrong_size
    stored = head.get("ChecksumSHA256")
    whole_object = head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"  # AWS says COMPOSITE for multipart
    if stored and whole_object and _existing_part_size(head.get("Metadata", {}), head) == 0:
        try:
            digest = base64.b64decode(_checksum_value(stored), validate=True).hex()
        except ValueError:  # binascii.Error: not what S3 sends; fall back to the recorded SHA-256
            digest = ""
        if len(digest) == 64:
            return sha256_verdict(path, digest, receipt, "the store's")
    recorded = _recorded_sha256(head)
    if recorded is None:
        return ArchiveIntegrity(path, Integrity.UNVERIFIED, "the size matches, but the store has no whole-object "
                                "SHA-256 for it and it carries no SHA-256 recorded by backup-ops")
    if recorded != receipt.sha256:
        return sha256_verdict(path, recorded, receipt, "recorded at upload")
    return ArchiveIntegrity(path, Integrity.INTACT, "size matches the receipt, and so does the SHA-256 recorded at "
                            "upload (the store's checksum of a multipart object is per part; not re-hashed)")


def store_holds(bucket: Bucket, key: str, sent: SentChecksums) -> bool:
    """Path 5: whether the object at ``key`` is provably the one described by ``sent``."""
    try:
        head = bucket.head(key)
    except Exception:
        return False
    if head is None or object_size(head) != sent.size:
        return False
    stored = head.get("ChecksumSHA256")
    if stored:
        return sent.matches(stored)
    return bool(_recorded_sha256(head) == sent.sha256)


def _sha256_b64(hex_digest: str) -> str:
    """A hex SHA-256 the way S3 shows checksums: base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _checksum_value(stored: str) -> str:
    """A store's ChecksumSHA256 without a composite's ``-N`` part count (base64 never contains '-')."""
    return stored.split("-", 1)[0]


def _recorded_sha256(head: dict[str, Any]) -> str | None:
    """The SHA-256 backup-ops recorded in the object's metadata when it uploaded it, if any."""
    value: str | None = head.get("Metadata", {}).get(METADATA_SHA256)
    return value


def _existing_part_size(metadata: Mapping[str, str], head: Mapping[str, Any]) -> int | None:
    """Part size of an existing object as backup-ops recorded it; 0 for a single PutObject; None if unknown."""
    etag = str(head.get("ETag", "")).strip('"')
    if "-" not in etag and not head.get("PartsCount"):
        return 0
    recorded = metadata.get(METADATA_PART_SIZE, "")
    return int(recorded) if recorded.isdigit() and int(recorded) > 0 else None


def _local_checksums(name: str, source: Path, part_size: int | None) -> SentChecksums:
    """SHA-256 of a local file and, for ``part_size`` > 0, of each of its parts, in one pass."""
    whole = hashlib.sha256()
    digests: list[bytes] = []
    size = 0
    chunk = part_size or CHUNK_SIZE
    try:
        with open(source, "rb") as stream:
            while data := stream.read(chunk):
                whole.update(data)
                size += len(data)
                if part_size:
                    digests.append(hashlib.sha256(data).digest())
    except OSError as exc:
        raise DestinationError(f"Destination {name}: cannot read staged archive {source}: {exc.strerror}.") from exc
    return SentChecksums(size, whole.hexdigest(), tuple(digests))
