#!/bin/sh
# docker-compose.yaml's minio-init (image minio/mc), run once per `docker compose up` after MinIO is
# healthy; every step may run again.
#   * the staging bucket (backup.staging) and the backup bucket (the "minio" destination);
#   * on the staging bucket, staging-lifecycle.json: objects under runs/ expire after 7 days, a backstop
#     for the leftovers of crashed runs that later runs have not removed (a run is over within 23 h).
#     Unfinished multipart uploads are not a lifecycle rule on MinIO (it does not support
#     AbortIncompleteMultipartUpload): MinIO removes them itself after MINIO_API_STALE_UPLOADS_EXPIRY;
#   * backup-ops' own access key (BACKUP_S3_ACCESS_KEY / BACKUP_S3_SECRET_KEY) with MinIO's built-in
#     readwrite policy, so Airflow never holds the root credentials; its secret is set again each time.
set -eu

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$STAGING_BUCKET"
mc mb --ignore-existing "local/$BACKUP_BUCKET"
mc ilm rule import "local/$STAGING_BUCKET" < /deploy/minio/staging-lifecycle.json
mc admin user add local "$BACKUP_S3_ACCESS_KEY" "$BACKUP_S3_SECRET_KEY" >/dev/null
# The image has a shell but few tools: a case statement instead of grep.
case "$(mc admin user info local "$BACKUP_S3_ACCESS_KEY")" in
    *readwrite*) echo "Access key $BACKUP_S3_ACCESS_KEY has the readwrite policy." ;;
    *) mc admin policy attach local readwrite --user "$BACKUP_S3_ACCESS_KEY" ;;
esac
echo "Buckets $STAGING_BUCKET and $BACKUP_BUCKET are ready."
