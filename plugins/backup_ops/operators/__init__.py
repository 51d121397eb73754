"""Airflow-facing steps and operators: thin wrappers that call one core function each."""
