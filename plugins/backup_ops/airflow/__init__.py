"""The Airflow side: task steps, operators, task defaults and failure callbacks.

Each step is a few lines: it receives the config and its inputs from the task, calls the core
and the adapters, logs one summary and returns a small JSON-able dict for XCom. DAG files import
only this package and ``backup_ops.core.config``.
"""
