"""S3Destination faults against moto's HTTP server: name clashes, credentials, integrity checks, leftovers.

Where moto cannot produce a store's answer (an expired session token, a skewed clock) the fault
proxy in front of it answers with the exact error XML S3 sends.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backup_ops.adapters.destinations.base import ArchiveNameClash, receipt_bytes
from backup_ops.core.errors import DestinationError
from backup_ops.core.models import Integrity, Receipt
from tests.fixtures_s3 import TEST_BUCKET, Fault
from tests.integration.test_s3_destination import (
    APP,
    in_progress_uploads,
    is_part,
    key_of,
    make_destination,
    moto_iam_checks,
    object_keys,
)
from tests.integration.test_s3_destination import iam_user_with_policy as iam_user

MIB = 1 << 20
ALL_S3 = json.dumps({"Version": "2012-10-17",
                     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


def other_runs_receipt(file_name: str) -> Receipt:
    return Receipt(archive=file_name, size=123, sha256="ab" * 32, created_at="2026-11-26T02:00:00+00:00")


class TestNameClash:
    def test_another_runs_receipt_is_never_overwritten(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(6 * MIB)
        theirs = other_runs_receipt(staged.file_name)
        # Run A picked the same second and is uploading: its receipt is there, its archive not yet.
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name) + ".json", Body=receipt_bytes(theirs))
        dest = make_destination(s3_client)

        assert dest.name_taken(staged.file_name)
        with pytest.raises(ArchiveNameClash) as caught:
            dest.publish(staged.path, staged.file_name, staged.receipt)

        assert caught.value.retryable is False
        assert str(caught.value).startswith(
            f"Destination offsite: name clash: s3://{TEST_BUCKET}/{key_of(staged.file_name)}.json already exists "
            "with different content (another run's receipt")
        assert dest.read_receipt(f"{APP}/{staged.file_name}") == theirs
        assert object_keys(s3_client) == [key_of(staged.file_name) + ".json"]
        assert in_progress_uploads(s3_client) == []

    def test_a_receipt_written_between_check_and_write_is_not_overwritten(self, s3_client, s3_endpoint,
                                                                          make_s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(1000)
        theirs = other_runs_receipt(staged.file_name)
        client = make_s3_client(s3_endpoint)

        def other_run_writes_its_receipt_first(params: dict[str, Any], **_: Any) -> None:
            if params.get("Key", "").endswith(".json") and not object_keys(s3_client):
                s3_client.put_object(Bucket=TEST_BUCKET, Key=params["Key"], Body=receipt_bytes(theirs))

        client.meta.events.register("before-parameter-build.s3.PutObject", other_run_writes_its_receipt_first)
        with pytest.raises(ArchiveNameClash, match="another run's receipt"):
            make_destination(client).publish(staged.path, staged.file_name, staged.receipt)
        assert make_destination(s3_client).read_receipt(f"{APP}/{staged.file_name}") == theirs
        assert object_keys(s3_client) == [key_of(staged.file_name) + ".json"]

    def test_name_taken(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(1000)
        dest = make_destination(s3_client)
        assert not dest.name_taken(staged.file_name)
        dest.publish(staged.path, staged.file_name, staged.receipt)
        assert dest.name_taken(staged.file_name)
        s3_client.delete_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name))
        assert dest.name_taken(staged.file_name)  # the receipt alone holds the name


class TestCredentials:
    """A refused request says which credential is wrong, and is never retried."""

    def reachability_error(self, client: Any) -> DestinationError:
        with pytest.raises(DestinationError) as caught:
            make_destination(client).check_reachable()
        return caught.value

    def test_wrong_secret_key(self, s3_endpoint, make_s3_client) -> None:
        key_id, _ = iam_user(s3_endpoint, "backup-ops", ALL_S3)
        with moto_iam_checks(s3_endpoint):
            error = self.reachability_error(make_s3_client(s3_endpoint, key_id=key_id, secret="wrong", attempts=1))
        assert str(error) == (
            f"Destination offsite: bucket {TEST_BUCKET} is not usable: the secret access key is wrong: the store "
            "computed another signature for this access key id (SignatureDoesNotMatch); fix the password (secret "
            "access key) of Airflow connection 'backup_s3'.")
        assert error.retryable is False

    def test_unknown_access_key_id(self, s3_endpoint, make_s3_client) -> None:
        with moto_iam_checks(s3_endpoint):
            error = self.reachability_error(make_s3_client(s3_endpoint, key_id="AKIAWRONGWRONGWRONG1", attempts=1))
        assert "the access key id is unknown to the store" in str(error) and "(InvalidAccessKeyId)" in str(error)
        assert "permission" not in str(error) and error.retryable is False

    def test_wrong_secret_while_publishing(self, s3_endpoint, s3_client, make_s3_client, make_staged_archive) -> None:
        key_id, _ = iam_user(s3_endpoint, "backup-ops", ALL_S3)
        staged = make_staged_archive(1000)
        with moto_iam_checks(s3_endpoint):
            client = make_s3_client(s3_endpoint, key_id=key_id, secret="wrong", attempts=1)
            with pytest.raises(DestinationError, match=r"checking s3://.* failed: the secret access key is wrong") as e:
                make_destination(client).publish(staged.path, staged.file_name, staged.receipt)
        assert e.value.retryable is False
        assert object_keys(s3_client) == []

    def test_missing_permission_is_access_denied(self, s3_endpoint, make_s3_client) -> None:
        key_id, secret = iam_user(s3_endpoint, "no-s3", json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}))
        with moto_iam_checks(s3_endpoint):
            error = self.reachability_error(make_s3_client(s3_endpoint, key_id=key_id, secret=secret, attempts=1))
        assert "not usable: access denied (AccessDenied" in str(error) and "docs/s3.md" in str(error)
        assert error.retryable is False

    @pytest.mark.parametrize(("fault", "expected"), [
        (Fault(400, "ExpiredToken", "The provided token has expired."),
         "the session token has expired (ExpiredToken); refresh the temporary credentials of Airflow connection "
         "'backup_s3'"),
        (Fault(403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too "
                                            "large."),
         "this worker's clock differs from the store's by more than 15 minutes, so every signature is refused "
         "(RequestTimeTooSkewed); synchronise the worker's clock (NTP)"),
    ])
    def test_store_answers_moto_cannot_give(self, faulty_endpoint, make_s3_client, fault: Fault,
                                            expected: str) -> None:
        proxy = faulty_endpoint(lambda request: fault)  # HEAD gets the status only, the listing the XML too
        error = self.reachability_error(make_s3_client(proxy.url, attempts=1))
        assert str(error) == f"Destination offsite: bucket {TEST_BUCKET} is not usable: {expected}."
        assert error.retryable is False

    def test_transient_faults_stay_retryable(self, s3_client, faulty_endpoint, make_s3_client,
                                             make_staged_archive) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
        assert self.reachability_error(make_s3_client(closed, attempts=1)).retryable is True
        proxy = faulty_endpoint(lambda r: Fault(503, "SlowDown", "Please reduce your request rate.")
                                if r.method == "PUT" else None)
        staged = make_staged_archive(1000)
        with pytest.raises(DestinationError, match="HTTP 503 \\(SlowDown") as caught:
            make_destination(make_s3_client(proxy.url, attempts=1)).publish(staged.path, staged.file_name,
                                                                              staged.receipt)
        assert caught.value.retryable is True

    def test_missing_bucket_is_not_retryable(self, s3_client) -> None:
        error = self.reachability_error_for_bucket(s3_client)
        assert "does not exist" in str(error) and error.retryable is False

    def reachability_error_for_bucket(self, client: Any) -> DestinationError:
        with pytest.raises(DestinationError) as caught:
            make_destination(client, bucket="no-such-bucket").check_reachable()
        return caught.value


class TestIntegrity:
    def test_single_put_is_checked_by_the_stores_sha256(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(300_000)
        dest = make_destination(s3_client)
        path = dest.publish(staged.path, staged.file_name, staged.receipt).path
        assert dest.check_integrity(path).detail == "size and SHA-256 (the store's) match the receipt"

        same_size = bytearray(staged.read())
        same_size[1000] ^= 0xFF
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name), Body=bytes(same_size),
                             ChecksumAlgorithm="SHA256")
        check = dest.check_integrity(path)
        assert check.damaged and check.detail.startswith("sha256 differs: the store's ")

    def test_multipart_is_checked_by_size_and_recorded_sha256(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(11 * MIB)
        dest = make_destination(s3_client)
        path = dest.publish(staged.path, staged.file_name, staged.receipt).path
        check = dest.check_integrity(path)
        assert check.intact and "SHA-256 recorded at upload" in check.detail

    def test_truncated_object_is_damaged(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(11 * MIB)
        dest = make_destination(s3_client)
        path = dest.publish(staged.path, staged.file_name, staged.receipt).path
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name), Body=staged.read()[:MIB])
        check = dest.check_integrity(path)
        assert check.damaged and check.detail == f"size differs: {MIB} bytes, but its receipt says {11 * MIB}"

    def test_no_receipt_is_unverified(self, s3_client) -> None:
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of("2026-01-01-00-00-00.zip"), Body=b"laravel-backup")
        check = make_destination(s3_client).check_integrity(f"{APP}/2026-01-01-00-00-00.zip")
        assert check.state is Integrity.UNVERIFIED and check.detail.startswith("no receipt beside it")


class TestLeftovers:
    def test_a_dead_endpoint_leaves_an_upload_and_a_receipt_that_cleanup_removes(
        self, s3_client, faulty_endpoint, make_s3_client, make_staged_archive
    ) -> None:
        proxy = faulty_endpoint(lambda r: Fault(die=True) if is_part(2)(r) else None)
        staged = make_staged_archive(12 * MIB)
        with pytest.raises(DestinationError, match="could not be aborted"):
            make_destination(make_s3_client(proxy.url)).publish(staged.path, staged.file_name, staged.receipt)
        assert object_keys(s3_client) == [key_of(staged.file_name) + ".json"]  # the receipt could not be removed
        assert len(in_progress_uploads(s3_client)) == 1
        dest = make_destination(s3_client)

        # moto reports every upload as initiated 2010-11-10: a cutoff before that finds none, as a young one.
        assert [lo.kind for lo in dest.find_leftovers(datetime(2010, 1, 1, tzinfo=UTC))] == []
        found = dest.find_leftovers(datetime.now(UTC) + timedelta(minutes=1))
        assert sorted((lo.kind, lo.path) for lo in found) == [
            ("incomplete upload", f"{APP}/{staged.file_name}"),
            ("orphan receipt", f"{APP}/{staged.file_name}.json"),
        ]
        for leftover in found:
            dest.remove_leftover(leftover)
        assert object_keys(s3_client) == []
        assert in_progress_uploads(s3_client) == []

    def test_a_receipt_whose_archive_arrived_is_kept(self, s3_client, make_staged_archive) -> None:
        staged = make_staged_archive(1000)
        dest = make_destination(s3_client)
        s3_client.put_object(Bucket=TEST_BUCKET, Key=key_of(staged.file_name) + ".json",
                             Body=receipt_bytes(staged.receipt))
        (orphan,) = dest.find_leftovers(datetime.now(UTC) + timedelta(minutes=1))
        dest.publish(staged.path, staged.file_name, staged.receipt)  # the slow publish finishes after all
        dest.remove_leftover(orphan)
        assert object_keys(s3_client) == [key_of(staged.file_name), key_of(staged.file_name) + ".json"]
