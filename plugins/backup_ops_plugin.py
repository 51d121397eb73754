"""The backup-ops Airflow plugin: the Backups page in the UI's navigation, its catalog API and health endpoint.

The api-server mounts the FastAPI app of ``backup_ops.airflow.ui.app`` under ``/backup-ops``,
and the UI lists "Backups" in its navigation, opening ``/backup-ops/`` inside the UI (an external
view with a ``url_route``: ``/plugin/backup-ops``). See docs/ui.md.

Airflow's plugin loader imports this file in every Airflow process (scheduler, DAG processor,
triggerer, each task), but only the api-server reads ``fastapi_apps``. So the app is built the
first time that attribute is read, not when this file is imported: FastAPI, Airflow's security
module and backup-ops' UI code are imported in the api-server only.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/backup-ops"  # backup_ops.airflow.ui.app.URL_PREFIX, repeated here to keep this import light


class _AppsBuiltOnFirstRead:
    """A class attribute whose value, the ``fastapi_apps`` list, is built on first read and kept."""

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        if self._apps is None:
            with self._lock:
                if self._apps is None:
                    from backup_ops.airflow.ui.app import create_app

                    self._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "backup-ops"}]
        return self._apps


class BackupOpsPlugin(AirflowPlugin):
    """Registers the backup-ops app on the api-server and its page in the UI's navigation."""

    name = "backup_ops"
    fastapi_apps = _AppsBuiltOnFirstRead()  # type: ignore[assignment]
    external_views = [  # noqa: RUF012 - Airflow reads plugins' class attributes
        {
            "name": "Backups",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "backup-ops",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX}/icon.svg",
        }
    ]
