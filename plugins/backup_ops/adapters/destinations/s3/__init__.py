"""A destination in an S3 bucket (AWS or S3-compatible): atomic multipart publish, verified by SHA-256.

The package reads in layers, each module one idea:

* ``policy``: what a destination's requests may carry (upload_args) and what its credentials need.
* ``bucket``: the boto3 client built lazily from the Airflow connection, the arguments every
  request carries, and S3 failures turned into one sentence.
* ``upload``: PutObject or a bounded-memory multipart upload that completes whole or is aborted.
* ``verify``: proving the store holds exactly the bytes published, and which proof applies when.
* ``destination``: ``S3Destination``, the BackupDestination implementation wiring them together.

Importing it imports neither Airflow nor boto3; the client is built on first use.
"""

from __future__ import annotations

from backup_ops.adapters.destinations.s3.destination import S3Destination

__all__ = ["S3Destination"]
