"""What an S3 destination's requests may carry, and what its credentials need to send them.

``upload_args`` in the config become extra parameters of the archive's PutObject or
CreateMultipartUpload; only the keys and values below are accepted, so a typo fails when the
config is read rather than in the middle of a backup. The receipt gets a subset of them, and
``iam_policy_json`` writes the minimal IAM policy for a bucket, prefix and set of upload args.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backup_ops.core.errors import ConfigError

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


def receipt_args(object_args: Mapping[str, Any]) -> dict[str, Any]:
    """The archive's write args that the receipt gets too: encryption, ACL and tags, not the storage class."""
    return {k: v for k, v in object_args.items() if k in _RECEIPT_ARGS}


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
