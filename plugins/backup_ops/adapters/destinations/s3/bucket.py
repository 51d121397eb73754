"""One bucket as a destination reaches it: the client, the arguments every request carries, failures in words.

The boto3 client is built on first use from the destination's Airflow connection through the
Amazon provider's S3Hook. Airflow, boto3 and botocore are imported only then: DAG files and the
CLI import this package, and must not pay for them. Every failed S3 call ends as one sentence
naming the destination, the object and the reason (unreachable endpoint, wrong secret key,
unknown access key id, expired token, clock skew, missing permission, missing bucket, server
errors after botocore's retries), and says whether a retry could help: only an unreachable
endpoint, server errors and throttling can heal by themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from backup_ops.core.errors import BackupError, DestinationError

# Answers S3 gives when the credentials, not the permissions, are wrong: (phrase, what to fix).
_CREDENTIAL_ERRORS = {
    "SignatureDoesNotMatch": ("the secret access key is wrong: the store computed another signature for this access "
                              "key id", "fix the password (secret access key) of Airflow connection {conn}"),
    "InvalidAccessKeyId": ("the access key id is unknown to the store (deleted, deactivated, or for another "
                           "account or endpoint)", "fix the login (access key id) of Airflow connection {conn}"),
    "ExpiredToken": ("the session token has expired", "refresh the temporary credentials of Airflow connection {conn}"),
    "TokenRefreshRequired": ("the session token has expired",
                             "refresh the temporary credentials of Airflow connection {conn}"),
    "InvalidToken": ("the session token is malformed or invalid",
                     "fix the session token (extra aws_session_token) of Airflow connection {conn}"),
    "RequestTimeTooSkewed": ("this worker's clock differs from the store's by more than 15 minutes, so every "
                             "signature is refused", "synchronise the worker's clock (NTP)"),
}
_PERMISSIONS_HINT = ("the credentials need the permissions listed in docs/s3.md (s3:ListBucket, "
                     "s3:ListBucketMultipartUploads, s3:GetObject, s3:PutObject, s3:DeleteObject, "
                     "s3:AbortMultipartUpload)")
# HEAD answers carry no body, so a refused HEAD says only "403"/"400"; a small listing then tells why.
_BODYLESS_CODES = ("400", "403", "Bad Request", "Forbidden")


@dataclass(frozen=True)
class Failure:
    """Why an S3 call failed, as the end of a sentence, and whether trying again could help."""

    phrase: str
    retryable: bool


class Bucket:
    """A bucket through a lazily built boto3 client, with ExpectedBucketOwner on every request."""

    def __init__(self, destination: str, name: str, *, conn_id: str | None, expected_owner: str | None,
                 max_concurrency: int, client: Any = None, folder: str = "") -> None:
        self.destination = destination  # the destination's name, for messages
        self.name = name
        self.conn_id = conn_id
        self.folder = folder  # the destination's key prefix: a refused HEAD is diagnosed by listing it
        self.max_concurrency = max_concurrency
        # ExpectedBucketOwner guards every request (a bucket taken over by another account must
        # not receive backups), the other upload args only apply to writes.
        self.args: dict[str, Any] = {"Bucket": name, **({"ExpectedBucketOwner": expected_owner}
                                                         if expected_owner else {})}
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 S3 client, built from the Airflow connection on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._client_from_connection()
        return self._client

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
            ours = Config(max_pool_connections=pool)
            if not base.retries:
                # botocore's "standard" retries (3 attempts, jittered backoff), which botocore 1.44 made the
                # default; older releases default to "legacy" (5 attempts, ~30 s on a dead endpoint). Pinned
                # so behaviour does not change with the version; a connection's own retries config wins.
                ours = ours.merge(Config(retries={"mode": "standard"}))
            return hook.get_client_type(region_name=hook.region_name, config=base.merge(ours))
        except Exception as exc:
            # A connection that does not exist stays missing; anything else (a secrets backend down) may heal.
            raise DestinationError(
                f"Destination {self.destination}: cannot create an S3 client from Airflow connection "
                f"{self.conn_id!r}: {exc}.", retryable=type(exc).__name__ != "AirflowNotFoundException"
            ) from exc

    @property
    def endpoint(self) -> str:
        """The client's endpoint URL, for messages ("(unknown endpoint)" when even that fails)."""
        try:
            return str(self.client.meta.endpoint_url)
        except Exception:  # only used inside error messages; never mask the real error
            return "(unknown endpoint)"

    def url(self, key: str) -> str:
        """``s3://<bucket>/<key>``, the way messages name an object."""
        return f"s3://{self.name}/{key}"

    def head(self, key: str) -> dict[str, Any] | None:
        """HeadObject with checksums, or None when there is no object at ``key``."""
        try:
            return cast(dict[str, Any], self.client.head_object(Key=key, ChecksumMode="ENABLED", **self.args))
        except Exception as exc:
            code, status, _ = client_error(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def explain(self, exc: BaseException) -> str:
        """One phrase saying why an S3 call failed, for the end of an error sentence."""
        return self.classify(exc).phrase

    def classify(self, exc: BaseException) -> Failure:
        """Why an S3 call failed and whether a retry could help (credentials, permissions, a bucket never heal)."""
        import botocore.exceptions as bex

        if isinstance(exc, (bex.ConnectionError, bex.HTTPClientError)):
            return Failure(f"endpoint {self.endpoint} is unreachable or dropped the connection ({exc})", True)
        if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
            return Failure(f"no usable AWS credentials for connection {self.conn_id!r} ({exc})", False)
        code, status, message = client_error(exc)
        if code is None:
            return Failure(f"{type(exc).__name__}: {exc}", True)
        if code in _BODYLESS_CODES:
            code, status, message = self._diagnose_bodyless(code, status, message)
        if code in _CREDENTIAL_ERRORS:
            problem, fix = _CREDENTIAL_ERRORS[code]
            return Failure(f"{problem} ({code}); {fix.format(conn=repr(self.conn_id))}", False)
        if code == "AccessDenied" or status == 403:
            return Failure(f"access denied ({code}: {message}); {_PERMISSIONS_HINT}", False)
        if code == "NoSuchBucket" or (status == 404 and code == "404"):
            return Failure(f"bucket {self.name} does not exist at {self.endpoint}", False)
        if status is not None and status >= 500:
            return Failure(f"the store answered HTTP {status} ({code}: {message}) on all {_attempts(exc)} attempts",
                           True)
        return Failure(f"{code}: {message}", True)  # throttling, timeouts, conflicts: another attempt may pass

    def _diagnose_bodyless(self, code: str, status: int | None, message: str) -> tuple[str, int | None, str]:
        """The error code behind a refused HEAD, from a one-key listing of the destination's folder."""
        try:
            self.client.list_objects_v2(Prefix=self.folder, MaxKeys=1, **self.args)
        except Exception as probe:
            probe_code, probe_status, probe_message = client_error(probe)
            if probe_code and probe_code not in _BODYLESS_CODES:
                return probe_code, probe_status, probe_message
        return code, status, message

    def raise_failure(self, doing: str, key: str, exc: BaseException, tail: str = "") -> NoReturn:
        """Raise one DestinationError sentence for a failed S3 call; backup-ops' own errors pass unchanged."""
        if isinstance(exc, BackupError):
            raise exc
        failure = self.classify(exc)
        raise DestinationError(
            f"Destination {self.destination}: {doing} {self.url(key)} failed: {failure.phrase}{tail}.",
            retryable=failure.retryable,
        ) from exc


def object_size(head: dict[str, Any]) -> int:
    """ContentLength of a HeadObject response (-1 when a store leaves it out)."""
    return int(head.get("ContentLength", -1))


def client_error(exc: BaseException) -> tuple[str | None, int | None, str]:
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
