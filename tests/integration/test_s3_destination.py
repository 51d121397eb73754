"""S3Destination against moto's HTTP server: atomic multipart publish, verification, listing, failures."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from backup_ops.adapters.destinations.s3 import S3Destination
from backup_ops.adapters.destinations.s3.policy import iam_policy_json
from backup_ops.adapters.destinations.s3.upload import MIB, PART_BUDGET, part_size_for
from backup_ops.core.config import S3DestinationConfig
from backup_ops.core.errors import ConfigError, DestinationError, VerificationError
from backup_ops.core.models import Receipt
from tests.fixtures_s3 import TEST_BUCKET, Fault, ProxiedRequest

PREFIX = "backups/prod"
APP = "invoicing-app"


def make_destination(client: Any, **overrides: Any) -> S3Destination:
    settings: dict[str, Any] = {"bucket": TEST_BUCKET, "conn_id": "backup_s3", "prefix": PREFIX,
                                "part_size_mb": 5, "max_concurrency": 3, "client": client}
    settings.update(overrides)
    return S3Destination("offsite", APP, **settings)


def key_of(file_name: str) -> str:
    return f"{PREFIX}/{APP}/{file_name}"


def object_keys(client: Any) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=TEST_BUCKET)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))


def in_progress_uploads(client: Any) -> list[dict[str, Any]]:
    return list(client.list_multipart_uploads(Bucket=TEST_BUCKET).get("Uploads", []))


def composite_sha256(data: bytes, part_size: int) -> str:
    digests = b"".join(hashlib.sha256(data[i:i + part_size]).digest() for i in range(0, len(data), part_size))
    return base64.b64encode(hashlib.sha256(digests).digest()).decode()


def is_part(number: int) -> Any:
    def rule(request: ProxiedRequest) -> bool:
        return request.method == "PUT" and request.query.get("partNumber") == str(number)
    return rule


# ---------------------------------------------------------------------------- pure parts


class TestPartSize:
    def test_configured_size_for_ordinary_archives(self) -> None:
        assert part_size_for(12 * MIB, 5) == 5 * MIB
        assert part_size_for(3 * 1024 * MIB, 64) == 64 * MIB

    @pytest.mark.parametrize("size", [1, 5 * MIB, 64 * MIB * 9000, 64 * MIB * 9000 + 1, 1024**4, 5 * 1024**4,
                                      40 * 1024**4])
    def test_any_size_stays_under_the_part_limit(self, size: int) -> None:
        part_size = part_size_for(size, 64)
        assert part_size >= 64 * MIB
        assert part_size % MIB == 0
        assert -(-size // part_size) <= PART_BUDGET < 10_000

    def test_archive_beyond_s3_limits_is_refused(self) -> None:
        with pytest.raises(DestinationError, match="at most 5 GiB"):
            part_size_for(50 * 1024**4, 64)


class TestConfiguration:
    def test_unknown_upload_arg_is_refused_with_the_accepted_list(self) -> None:
        with pytest.raises(ConfigError, match=r"offsite: upload_args has unknown key 'Expires'.*StorageClass"):
            make_destination(None, upload_args={"Expires": "tomorrow"})

    @pytest.mark.parametrize(("args", "match"), [
        ({"ServerSideEncryption": "rot13"}, "ServerSideEncryption must be AES256, aws:kms"),
        ({"SSEKMSKeyId": "alias/backups"}, "SSEKMSKeyId needs ServerSideEncryption"),
        ({"ACL": "world-writable"}, "ACL must be"),
        ({"StorageClass": " "}, "StorageClass must be a non-empty string"),
    ])
    def test_bad_upload_arg_values(self, args: dict[str, str], match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            make_destination(None, upload_args=args)

    def test_needs_a_connection_or_a_client(self) -> None:
        with pytest.raises(ConfigError, match="needs conn_id"):
            S3Destination("offsite", APP, bucket=TEST_BUCKET)

    def test_keys_and_locations(self) -> None:
        dest = make_destination(None)
        assert dest.location() == f"s3://{TEST_BUCKET}/{PREFIX}"
        assert dest.location(f"{APP}/a.zip") == f"s3://{TEST_BUCKET}/{PREFIX}/{APP}/a.zip"
        assert make_destination(None, prefix="").location(f"{APP}/a.zip") == f"s3://{TEST_BUCKET}/{APP}/a.zip"
        for bad in ("../x.zip", f"{APP}/../other/x.zip", "other-app/x.zip", f"/{APP}/x.zip", f"{APP}//x.zip", APP):
            with pytest.raises(DestinationError, match="refusing to touch it"):
                dest.open_backup(bad)

    def test_iam_policy(self) -> None:
        policy = json.loads(iam_policy_json("corp-backups", "prod/", upload_args={"Tagging": "k=v"},
                                            kms_key_arn="arn:aws:kms:eu-west-1:111122223333:key/abc"))
        bucket, objects, kms = policy["Statement"]
        assert bucket["Resource"] == "arn:aws:s3:::corp-backups"
        assert set(bucket["Action"]) == {"s3:ListBucket", "s3:ListBucketMultipartUploads"}
        assert objects["Resource"] == "arn:aws:s3:::corp-backups/prod/*"
        assert "s3:PutObjectTagging" in objects["Action"] and "s3:PutObjectAcl" not in objects["Action"]
        assert kms["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
        assert json.loads(iam_policy_json("b1b"))["Statement"][1]["Resource"] == "arn:aws:s3:::b1b/*"

    def test_module_imports_without_airflow_or_boto3(self) -> None:
        code = ("import sys; import backup_ops.adapters.destinations.s3; "
                "print(sorted(m for m in ('airflow', 'boto3', 'botocore') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": "plugins"}, cwd=str(_repo_root()))
        assert out.stdout.strip() == "[]"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- publishing


class TestPublish:
    def test_multipart_upload_is_verified_and_reads_back(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(12 * MIB)
        dest = make_destination(s3_client)

        published = dest.publish(staged.path, staged.file_name, staged.receipt)

        assert published.path == f"{APP}/{staged.file_name}"
        assert published.location == f"s3://{TEST_BUCKET}/{key_of(staged.file_name)}"
        assert (published.size, published.sha256, published.already_present) == (
            staged.receipt.size, staged.receipt.sha256, False)
        head = s3_client.head_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name), ChecksumMode="ENABLED")
        assert head["ETag"].strip('"').endswith("-3")
        assert head["ChecksumSHA256"].split("-")[0] == composite_sha256(staged.read(), 5 * MIB)
        dest.verify_published(published)
        with dest.open_backup(published.path) as stream:
            assert stream.read() == staged.read()
        assert in_progress_uploads(s3_client) == []
        assert object_keys(s3_client) == [key_of(staged.file_name), key_of(staged.file_name) + ".json"]

    def test_small_archive_is_one_put_with_a_full_object_checksum(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(300_000)
        dest = make_destination(s3_client)

        published = dest.publish(staged.path, staged.file_name, staged.receipt)

        got = s3_client.get_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name), ChecksumMode="ENABLED")
        assert got["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(staged.receipt.sha256)).decode()
        assert "-" not in got["ETag"]
        dest.verify_published(published)
        make_destination(s3_client).verify_published(published)  # no upload record needed either

    def test_upload_args_apply_to_archive_and_receipt(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(6 * MIB)
        dest = make_destination(s3_client, upload_args={"StorageClass": "STANDARD_IA",
                                                        "ServerSideEncryption": "AES256"})
        dest.publish(staged.path, staged.file_name, staged.receipt)

        archive = s3_client.head_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name))
        receipt = s3_client.head_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name) + ".json")
        assert archive["StorageClass"] == "STANDARD_IA"
        assert archive["ServerSideEncryption"] == receipt["ServerSideEncryption"] == "AES256"
        assert "StorageClass" not in receipt  # receipts stay in STANDARD so monitoring can read them

    def test_receipts_are_written_and_read(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(1000)
        dest = make_destination(s3_client)
        published = dest.publish(staged.path, staged.file_name, staged.receipt)

        assert dest.read_receipt(published.path) == staged.receipt
        assert dest.read_receipt(f"{APP}/2020-01-01-00-00-00.zip") is None
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name) + ".json", Body=b"{not json")
        assert dest.read_receipt(published.path) is None

    def test_never_overwrites(self, s3_client, make_staged_archive) -> None:
        first = make_staged_archive(7 * MIB, seed=1)
        dest = make_destination(s3_client)
        dest.publish(first.path, first.file_name, first.receipt)
        etag = s3_client.head_object(Bucket=TEST_BUCKET, Key=key_of(first.file_name))["ETag"]

        again = dest.publish(first.path, first.file_name, first.receipt)
        assert again.already_present
        elsewhere = make_destination(s3_client).publish(first.path, first.file_name, first.receipt)
        assert elsewhere.already_present  # composite checksum recomputed from the staged file
        make_destination(s3_client).verify_published(again)

        other = make_staged_archive(7 * MIB, seed=2)
        with pytest.raises(DestinationError, match=r"offsite: .* already exists with different .*never overwrites"):
            dest.publish(other.path, first.file_name, other.receipt)
        assert s3_client.head_object(Bucket=TEST_BUCKET, Key=key_of(first.file_name))["ETag"] == etag
        assert dest.read_receipt(f"{APP}/{first.file_name}") == first.receipt
        assert len(object_keys(s3_client)) == 2

    def test_concurrent_writer_is_not_overwritten(self, s3_client, make_s3_client, s3_endpoint,
                                                  make_staged_archive) -> None:
        staged = make_staged_archive(11 * MIB)
        key = key_of(staged.file_name)
        client = make_s3_client(s3_endpoint)

        def someone_else_finishes_first(**_: Any) -> None:
            s3_client.put_object(Bucket=TEST_BUCKET, Key=key, Body=b"another writer's archive")

        client.meta.events.register("before-call.s3.CompleteMultipartUpload", someone_else_finishes_first)
        with pytest.raises(DestinationError, match="already exists with different"):
            make_destination(client).publish(staged.path, staged.file_name, staged.receipt)

        assert s3_client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read() == b"another writer's archive"
        assert in_progress_uploads(s3_client) == []

    def test_store_without_conditional_writes(self, s3_client, faulty_endpoint, make_s3_client,
                                              make_staged_archive, caplog) -> None:
        def no_if_none_match(request: ProxiedRequest) -> Fault | None:
            if "if-none-match" in request.headers and request.method in ("PUT", "POST"):
                return Fault(501, "NotImplemented", "A header you provided implies functionality that is not "
                                                    "implemented")
            return None

        proxy = faulty_endpoint(no_if_none_match)
        staged = make_staged_archive(11 * MIB)
        dest = make_destination(make_s3_client(proxy.url))
        with caplog.at_level(logging.WARNING, logger="backup_ops.adapters.destinations.s3"):
            published = dest.publish(staged.path, staged.file_name, staged.receipt)
        dest.verify_published(published)
        assert "rejects If-None-Match" in caplog.text
        assert in_progress_uploads(s3_client) == []

    def test_changed_staged_archive_is_not_published(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(11 * MIB)
        lying = Receipt(staged.file_name, staged.receipt.size, "0" * 64, staged.receipt.created_at)

        with pytest.raises(VerificationError, match="changed before or during the upload"):
            make_destination(s3_client).publish(staged.path, staged.file_name, lying)
        assert object_keys(s3_client) == []
        assert in_progress_uploads(s3_client) == []

    def test_empty_archive_is_refused(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(0)
        with pytest.raises(VerificationError, match="empty or changed"):
            make_destination(s3_client).publish(staged.path, staged.file_name, staged.receipt)
        assert object_keys(s3_client) == []

    def test_throughput(self, s3_client, make_staged_archive, record_property) -> None:
        staged = make_staged_archive(96 * MIB)
        dest = make_destination(s3_client, part_size_mb=16, max_concurrency=4)
        started = time.monotonic()
        published = dest.publish(staged.path, staged.file_name, staged.receipt)
        seconds = time.monotonic() - started
        dest.verify_published(published)
        record_property("upload_mb_per_s", round(96 * MIB / 1e6 / seconds, 1))
        print(f"\nupload of 96 MiB to moto: {seconds:.2f} s, {96 * MIB / 1e6 / seconds:.1f} MB/s")


# ---------------------------------------------------------------------------- verification


class TestVerify:
    def test_replaced_object_fails_verification_and_is_discarded(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(11 * MIB)
        dest = make_destination(s3_client)
        published = dest.publish(staged.path, staged.file_name, staged.receipt)
        tampered = bytearray(staged.read())
        tampered[5 * MIB + 7] ^= 0xFF
        mpu = s3_client.create_multipart_upload(Bucket=TEST_BUCKET, Key=key_of(staged.file_name),
                                                ChecksumAlgorithm="SHA256")
        parts = []
        for number, offset in enumerate(range(0, len(tampered), 5 * MIB), start=1):
            part = s3_client.upload_part(Bucket=TEST_BUCKET, Key=key_of(staged.file_name), PartNumber=number,
                                         UploadId=mpu["UploadId"], Body=bytes(tampered[offset:offset + 5 * MIB]),
                                         ChecksumAlgorithm="SHA256")
            parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]})
        s3_client.complete_multipart_upload(Bucket=TEST_BUCKET, Key=key_of(staged.file_name),
                                            UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts})

        with pytest.raises(VerificationError, match="replaced or corrupted"):
            dest.verify_published(published)
        with pytest.raises(VerificationError, match="does not match what was published"):
            make_destination(s3_client).verify_published(published)  # no upload record: downloads and hashes
        dest.discard(published)
        assert object_keys(s3_client) == []

    def test_fresh_instance_verifies_a_multipart_object_by_download(self, s3_client, make_staged_archive,
                                                                    caplog) -> None:
        staged = make_staged_archive(11 * MIB)
        published = make_destination(s3_client).publish(staged.path, staged.file_name, staged.receipt)
        with caplog.at_level(logging.INFO, logger="backup_ops.adapters.destinations.s3"):
            make_destination(s3_client).verify_published(published)
        assert "downloading" in caplog.text

    def test_truncated_object_fails(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(1000)
        dest = make_destination(s3_client)
        published = dest.publish(staged.path, staged.file_name, staged.receipt)
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name), Body=b"")
        with pytest.raises(VerificationError, match="is 0 bytes but 1000 were published"):
            dest.verify_published(published)


# ---------------------------------------------------------------------------- listing and deleting


class TestListAndDelete:
    def test_lists_only_zip_files_below_the_backup_folder(self, s3_client) -> None:
        before = datetime.now(UTC) - timedelta(seconds=5)
        for key, body in {
            key_of("2026-11-20-02-00-00.zip"): b"a" * 10,
            key_of("2026-11-20-02-00-00.zip.json"): b"{}",
            key_of("2026-11-25-02-00-00.ZIP"): b"b" * 20,
            key_of("nested/2026-11-22-02-00-00.zip"): b"c" * 30,
            key_of("manual-copy.zip"): b"d" * 40,
            key_of("notes.txt"): b"not a backup",
            f"{PREFIX}/other-app/2026-11-26-02-00-00.zip": b"other app",
            f"{APP}/2026-11-26-02-00-00.zip": b"outside the prefix",
        }.items():
            s3_client.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)

        backups = make_destination(s3_client).list_backups()

        # Names without an exact lower-case timestamp name are dated by LastModified (now), so come first.
        assert [(b.path, b.size) for b in backups] == [
            (f"{APP}/2026-11-25-02-00-00.ZIP", 20),
            (f"{APP}/manual-copy.zip", 40),
            (f"{APP}/nested/2026-11-22-02-00-00.zip", 30),
            (f"{APP}/2026-11-20-02-00-00.zip", 10),
        ]
        assert backups[0].date >= before and backups[1].date >= before
        assert backups[2].date == datetime(2026, 11, 22, 2, tzinfo=UTC)
        assert backups[3].date == datetime(2026, 11, 20, 2, tzinfo=UTC)
        assert make_destination(s3_client, prefix="").list_backups()[0].path == f"{APP}/2026-11-26-02-00-00.zip"

    def test_listing_paginates_through_10000_objects(self, s3_client, seed_s3_objects, make_s3_client,
                                                     s3_endpoint, record_property) -> None:
        start = datetime(2025, 1, 1, tzinfo=UTC)
        names = [(start + timedelta(hours=i)).strftime("%Y-%m-%d-%H-%M-%S") + ".zip" for i in range(10_050)]
        seeded = {key_of(name): b"x" * (i % 7 + 1) for i, name in enumerate(names)}
        seeded.update({key_of(name) + ".json": b"{}" for name in names[:500]})
        seed_s3_objects(seeded)
        client = make_s3_client(s3_endpoint)
        calls: Counter[str] = Counter()
        client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))

        started = time.monotonic()
        backups = make_destination(client).list_backups()
        seconds = time.monotonic() - started

        assert len(backups) == 10_050
        assert backups[0].path == f"{APP}/{names[-1]}" and backups[-1].path == f"{APP}/{names[0]}"
        assert backups[123].size == (10_050 - 1 - 123) % 7 + 1
        assert set(calls) == {"ListObjectsV2"} and calls["ListObjectsV2"] == 11  # 10,550 keys, 1,000 a page
        record_property("list_10k_seconds", round(seconds, 2))
        print(f"\nlisted 10,550 objects (10,050 backups) in {seconds:.2f} s over {calls['ListObjectsV2']} pages")

    def test_delete_removes_archive_and_receipt_only(self, s3_client, make_staged_archive) -> None:
        dest = make_destination(s3_client)
        keep = make_staged_archive(100, file_name="2026-11-25-02-00-00.zip")
        gone = make_staged_archive(100, file_name="2026-11-26-02-00-00.zip")
        dest.publish(keep.path, keep.file_name, keep.receipt)
        published = dest.publish(gone.path, gone.file_name, gone.receipt)
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of("notes.txt"), Body=b"x")

        dest.delete_backup(published.path)
        dest.delete_backup(published.path)  # already gone: a retried cleanup must not fail

        assert object_keys(s3_client) == sorted([key_of(keep.file_name), key_of(keep.file_name) + ".json",
                                                 key_of("notes.txt")])
        for refused in (f"{APP}/notes.txt", f"{APP}/{keep.file_name}.json"):
            with pytest.raises(DestinationError, match=r"not a .zip backup"):
                dest.delete_backup(refused)
        with pytest.raises(DestinationError, match="refusing to touch it"):
            dest.delete_backup("other-app/2026-11-25-02-00-00.zip")


# ---------------------------------------------------------------------------- failures


class TestFailures:
    def test_server_errors_on_a_part_leave_nothing_behind(self, s3_client, faulty_endpoint, make_s3_client,
                                                          make_staged_archive) -> None:
        earlier = make_staged_archive(6 * MIB, file_name="2026-11-25-02-00-00.zip")
        make_destination(s3_client).publish(earlier.path, earlier.file_name, earlier.receipt)
        proxy = faulty_endpoint(lambda r: Fault(500) if is_part(2)(r) else None)
        staged = make_staged_archive(12 * MIB)

        with pytest.raises(DestinationError) as failure:
            make_destination(make_s3_client(proxy.url)).publish(staged.path, staged.file_name, staged.receipt)

        message = str(failure.value)
        assert message.startswith("Destination offsite: uploading ")
        assert f"s3://{TEST_BUCKET}/{key_of(staged.file_name)}" in message
        assert "HTTP 500 (InternalError" in message and "on all 3 attempts" in message
        assert "nothing was published and earlier backups were not touched" in message
        assert sum(is_part(2)(r) for r in proxy.seen) == 3  # botocore retried before giving up
        assert in_progress_uploads(s3_client) == []
        assert object_keys(s3_client) == [key_of(earlier.file_name), key_of(earlier.file_name) + ".json"]
        make_destination(s3_client).verify_published(
            make_destination(s3_client).publish(earlier.path, earlier.file_name, earlier.receipt))

    def test_endpoint_dying_mid_upload_then_a_retry(self, s3_client, faulty_endpoint, make_s3_client,
                                                    make_staged_archive) -> None:
        earlier = make_staged_archive(100, file_name="2026-11-25-02-00-00.zip")
        make_destination(s3_client).publish(earlier.path, earlier.file_name, earlier.receipt)
        proxy = faulty_endpoint(lambda r: Fault(die=True) if is_part(2)(r) else None)
        staged = make_staged_archive(12 * MIB)

        with pytest.raises(DestinationError) as failure:
            make_destination(make_s3_client(proxy.url)).publish(staged.path, staged.file_name, staged.receipt)

        message = str(failure.value)
        assert message.startswith("Destination offsite: uploading ")
        assert f"endpoint {proxy.url} is unreachable" in message
        assert "could not be aborted" in message  # the abort could not reach the dead endpoint either
        with pytest.raises(s3_client.exceptions.ClientError):
            s3_client.head_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name))
        assert len(in_progress_uploads(s3_client)) == 1
        assert set(object_keys(s3_client)) >= {key_of(earlier.file_name), key_of(earlier.file_name) + ".json"}

        # The task's retry, with the endpoint back: aborts the orphaned upload, publishes once.
        dest = make_destination(s3_client)
        published = dest.publish(staged.path, staged.file_name, staged.receipt)
        dest.verify_published(published)
        assert in_progress_uploads(s3_client) == []
        assert object_keys(s3_client) == sorted(key_of(f) + s for f in (earlier.file_name, staged.file_name)
                                                for s in ("", ".json"))
        assert dest.read_receipt(published.path) == staged.receipt

    def test_interrupt_aborts_the_upload(self, s3_client, make_s3_client, s3_endpoint, make_staged_archive) -> None:
        client = make_s3_client(s3_endpoint)

        def interrupt_part_3(params: dict[str, Any], **_: Any) -> None:
            if params.get("PartNumber") == 3:
                raise KeyboardInterrupt

        client.meta.events.register("before-parameter-build.s3.UploadPart", interrupt_part_3)
        staged = make_staged_archive(16 * MIB)
        with pytest.raises(KeyboardInterrupt):
            make_destination(client, max_concurrency=2).publish(staged.path, staged.file_name, staged.receipt)
        assert in_progress_uploads(s3_client) == []
        assert object_keys(s3_client) == []


    def test_cancel_from_on_kill_aborts_the_upload(self, s3_client, make_s3_client, s3_endpoint,
                                                   make_staged_archive) -> None:
        client = make_s3_client(s3_endpoint)
        dest = make_destination(client, max_concurrency=1)
        dest.cancel()  # nothing in progress yet: a no-op that must not fail
        dest = make_destination(client, max_concurrency=1)

        def stop_task_at_part_2(params: dict[str, Any], **_: Any) -> None:
            if params.get("PartNumber") == 2:
                dest.cancel()  # what the operator's on_kill does when Airflow sends SIGTERM

        client.meta.events.register("before-parameter-build.s3.UploadPart", stop_task_at_part_2)
        staged = make_staged_archive(16 * MIB)
        with pytest.raises(DestinationError, match=r"offsite: publishing s3://.* was cancelled .* aborted"):
            dest.publish(staged.path, staged.file_name, staged.receipt)
        assert in_progress_uploads(s3_client) == []
        assert object_keys(s3_client) == []


class TestReachability:
    def test_reachable(self, s3_client) -> None:
        make_destination(s3_client).check_reachable()

    def test_missing_bucket(self, s3_client) -> None:
        with pytest.raises(DestinationError, match="offsite: bucket no-such-bucket does not exist at http://"):
            make_destination(s3_client, bucket="no-such-bucket").check_reachable()

    def test_unreachable_endpoint(self, make_s3_client) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed port: connection refused
        with pytest.raises(DestinationError, match=f"offsite: bucket {TEST_BUCKET} is not usable: endpoint {url}"
                                                   " is unreachable"):
            make_destination(make_s3_client(url, attempts=1)).check_reachable()

    def test_wrong_credentials(self, s3_endpoint, make_s3_client) -> None:
        with moto_iam_checks(s3_endpoint):
            client = make_s3_client(s3_endpoint, key_id="AKIAWRONGWRONGWRONG1", attempts=1)
            # An unknown access key id is a credentials problem, not a missing permission (more in test_s3_reliability).
            with pytest.raises(DestinationError, match=r"offsite: bucket .* not usable: the access key id is unknown"):
                make_destination(client).check_reachable()

    def test_minimal_iam_policy_is_enough(self, s3_endpoint, s3_client, make_s3_client,
                                          make_staged_archive) -> None:
        policy = json.loads(iam_policy_json(TEST_BUCKET, PREFIX))
        # Two moto quirks, not needed on AWS: moto authorises HeadBucket as "s3:HeadBucket" (not an
        # IAM action; AWS checks s3:ListBucket) and DeleteObjects as s3:DeleteObject on the bucket
        # ARN (AWS checks s3:DeleteObject on each key, which the policy grants below the prefix).
        policy["Statement"].append({"Effect": "Allow", "Action": ["s3:HeadBucket", "s3:DeleteObject"],
                                    "Resource": f"arn:aws:s3:::{TEST_BUCKET}"})
        key_id, secret = iam_user_with_policy(s3_endpoint, "backup-ops", json.dumps(policy))
        narrow_id, narrow_secret = iam_user_with_policy(s3_endpoint, "read-only", json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}],
        }))
        staged = make_staged_archive(11 * MIB)
        with moto_iam_checks(s3_endpoint):
            dest = make_destination(make_s3_client(s3_endpoint, key_id=key_id, secret=secret, attempts=1))
            dest.check_reachable()
            published = dest.publish(staged.path, staged.file_name, staged.receipt)
            dest.verify_published(published)
            assert [b.path for b in dest.list_backups()] == [published.path]
            assert dest.read_receipt(published.path) == staged.receipt
            dest.delete_backup(published.path)

            reader = make_s3_client(s3_endpoint, key_id=narrow_id, secret=narrow_secret, attempts=1)
            with pytest.raises(DestinationError, match=r"offsite: writing receipt .* access denied"):
                make_destination(reader).publish(staged.path, staged.file_name, staged.receipt)
        assert object_keys(s3_client) == []


class TestAirflowConnection:
    def test_from_config_uses_the_connection(self, s3_client, make_staged_archive) -> None:
        config = S3DestinationConfig(name="offsite", conn_id="backup_s3", bucket=TEST_BUCKET, prefix="via-hook/",
                                     part_size_mb=5, max_concurrency=12)
        dest = S3Destination.from_config(config, APP)
        staged = make_staged_archive(11 * MIB)

        published = dest.publish(staged.path, staged.file_name, staged.receipt)
        dest.verify_published(published)

        assert published.location == f"s3://{TEST_BUCKET}/via-hook/{APP}/{staged.file_name}"
        assert [b.path for b in dest.list_backups()] == [published.path]
        assert object_keys(s3_client)[0] == f"via-hook/{APP}/{staged.file_name}"


# ---------------------------------------------------------------------------- moto IAM helpers


@contextmanager
def moto_iam_checks(endpoint: str) -> Iterator[None]:
    """Switch on moto's signature and IAM policy checks for the block (off again afterwards)."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


def iam_user_with_policy(endpoint: str, user: str, policy: str) -> tuple[str, str]:
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="backup-ops", PolicyDocument=policy)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
