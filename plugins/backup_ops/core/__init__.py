"""The pure core: configuration, models, errors, retention, manifest, archive format, file selection.

Nothing here imports Airflow or an adapter, so every rule can be tested without a scheduler,
a database or a bucket. Heavy libraries (pyzipper) are imported inside the functions that use them.
"""
