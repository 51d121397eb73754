"""``[core] hostname_callable`` of a loopback stack: the name of the host an Airflow process stands for.

Task instances record this callable's value as their ``hostname``. On one machine every worker
would record the same name, so a loopback stack (``devtools.celery_stack``) gives each worker the
name of the host it plays in ``BACKUP_OPS_STACK_HOSTNAME``; processes without it get Airflow's
own answer. Every Airflow process of such a stack imports this module (the repository root is on
its ``PYTHONPATH``), so it imports nothing heavy.
"""

from __future__ import annotations

import os

HOSTNAME_ENV = "BACKUP_OPS_STACK_HOSTNAME"


def hostname() -> str:
    """The host this process plays (``BACKUP_OPS_STACK_HOSTNAME``), else this machine's fully qualified name."""
    name = os.environ.get(HOSTNAME_ENV, "").strip()
    if name:
        return name
    from airflow.utils.net import getfqdn

    return str(getfqdn())
