# The Airflow image of the docker-compose stack (docs/deployment.md): Airflow's official image, the
# PostgreSQL client matching the application's server, backup-ops' pinned requirements and its code.
# The tag's Airflow and Python versions are requirements.txt's (tests/deploy/test_compose.py checks it).
FROM apache/airflow:3.3.2-python3.11

USER root

# pg_dump must be at least the server's major version: app-db runs PostgreSQL 16. The client comes from
# the PostgreSQL project's apt repository, set up as https://www.postgresql.org/download/linux/debian/
# describes (its signing key, a source entry bound to it); the entry the base image may already have for
# that repository is replaced, since two entries with different keys make apt refuse both.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl --fail --silent --show-error --location \
        -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    { grep -l -r apt.postgresql.org /etc/apt/sources.list.d/ || true; } | xargs -r rm -f; \
    . /etc/os-release; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends postgresql-client-16; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    /usr/lib/postgresql/16/bin/pg_dump --version

# Mount points of the stack's named volumes (the local destination, the application's files), owned by
# the Airflow user so that a new volume starts out writable for it.
RUN install -d -o airflow -g root -m 0775 /opt/backup-ops/backups /srv/invoicing-app

USER airflow

# requirements.txt is a full lock (uv pip compile) that pins apache-airflow itself; naming the image's
# version as well makes pip fail rather than change Airflow if the two ever disagree.
COPY --chown=airflow:root requirements.txt /requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root deploy/ /opt/airflow/deploy/
# The sample invoicing data and application tree the app-seed job lays out.
COPY --chown=airflow:root devtools/__init__.py devtools/sample_data.py devtools/sample_app.py /opt/airflow/devtools/

# Airflow puts the plugins folder on sys.path itself; this makes `python -m backup_ops check|list|...`
# work in a container too.
ENV PYTHONPATH=/opt/airflow/plugins
