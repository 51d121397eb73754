"""Give the api-server's login the password from .env before it starts (docker-compose.yaml's airflow-apiserver).

Airflow's simple auth manager reads each user's password from the JSON file named by
``[core] simple_auth_manager_passwords_file``; for a user missing from it, it makes one up and
prints it in the log. This writes ``{"<user>": "<AIRFLOW_ADMIN_PASSWORD>"}`` there (mode 0600)
for the first user of ``[core] simple_auth_manager_users``, every time the container starts, so the
login is the one in .env and a changed .env takes effect on restart.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

FILE_ENV = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
USERS_ENV = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
PASSWORD_ENV = "AIRFLOW_ADMIN_PASSWORD"


def write_password_file(env: Mapping[str, str]) -> Path:
    """Write the passwords file for the first configured user; SystemExit names what is missing."""
    missing = [name for name in (FILE_ENV, USERS_ENV, PASSWORD_ENV) if not env.get(name)]
    if missing:
        raise SystemExit(f"airflow-apiserver: {', '.join(missing)} not set; see docker-compose.yaml and .env.example.")
    user = env[USERS_ENV].split(",")[0].split(":")[0].strip()
    path = Path(env[FILE_ENV])
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({user: env[PASSWORD_ENV]}, out)
        out.write("\n")
    partial.replace(path)
    return path


if __name__ == "__main__":
    written = write_password_file(os.environ)
    print(f"Login for the Airflow UI: user {os.environ[USERS_ENV].split(':')[0]}, password from .env ({written})")
    sys.exit(0)
