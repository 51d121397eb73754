"""backup-ops: verifiable PostgreSQL + file backups, run as Airflow DAGs.

One folder per layer; each may import only the layers listed before it (tests/unit/test_layers.py):

* ``core``: pure logic and formats (config, models, retention, manifest, archive, file selection).
  Imports neither Airflow nor an adapter.
* ``adapters``: the outside world (PostgreSQL, destinations, mail, secrets). Imports the core;
  may use Airflow's hooks and connections, never backup-ops' task code.
* ``airflow``: task steps, operators, task defaults and callbacks. Imports the core and adapters.
* ``cli``: ``python -m backup_ops``, for operators without a running Airflow.
"""

__version__ = "0.1.0"
