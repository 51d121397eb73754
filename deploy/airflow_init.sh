#!/usr/bin/env bash
# docker-compose.yaml's airflow-init, run as root once per `docker compose up`, before any other Airflow
# container starts: hands the named volumes to the Airflow user, migrates the metadata database (also
# after an upgrade), and creates the pool backup_daily's dumps run in when it does not exist yet.
set -euo pipefail

owner="${AIRFLOW_UID:-50000}:0"
# A new named volume belongs to root; the Airflow containers run as AIRFLOW_UID with group 0.
for volume in /opt/airflow/logs /opt/backup-ops/backups /srv/invoicing-app; do
    mkdir -p "${volume}"
    chown -R "${owner}" "${volume}"
    chmod 0775 "${volume}"
done

# The image's entrypoint waits for the metadata database first.
exec /entrypoint bash -c '
    set -euo pipefail
    airflow db migrate
    if airflow pools get backup_ops_dumps >/dev/null 2>&1; then
        echo "Pool backup_ops_dumps exists: its slots are left as they are."
    else
        airflow pools set backup_ops_dumps 1 "backup-ops: one pg_dump at a time per database server"
    fi
    airflow version
'
