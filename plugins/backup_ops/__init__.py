"""backup-ops: verifiable PostgreSQL + file backups, run as Airflow DAGs.

Core modules (config, models, retention, archive, manifest, files, health) never import
Airflow; adapters and operators do, lazily.
"""

__version__ = "0.1.0"
