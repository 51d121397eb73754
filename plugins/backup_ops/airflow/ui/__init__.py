"""The backup-ops page in Airflow's UI: a FastAPI app the api-server mounts under ``/backup-ops``.

``app`` holds the routes (``/health``, ``/api/backups``, the page at ``/``), ``cache`` reads the
destinations through the monitor's code and keeps what it read for ``ui.cache_seconds``, ``page``
and ``charts`` render the HTML and its inline SVG. The plugin that registers it is the top-level
``plugins/backup_ops_plugin.py``; see docs/ui.md.
"""
