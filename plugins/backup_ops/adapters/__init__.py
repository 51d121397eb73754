"""Adapters to the outside world: PostgreSQL, destinations (local disk, S3), mail, secrets.

Each translates its library's and the operating system's errors into the core's one-sentence
``BackupError`` types at the boundary. Adapters import the core, and may use Airflow's hooks and
connections, but never backup-ops' task code (``backup_ops.airflow``).
"""
