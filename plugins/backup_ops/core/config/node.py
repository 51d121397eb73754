"""One value of the raw YAML with its key path, and typed accessors that fail with one clear sentence."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backup_ops.core.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MISSING = object()


class ConfigNode:
    """A value in the raw config plus its key path, with typed accessors that fail clearly."""

    def __init__(self, value: Any, path: str, base_dir: Path, present: bool = True) -> None:
        self.value = value
        self.path_str = path or "(top level)"
        self._path = path
        self.base_dir = base_dir
        self.present = present

    def fail(self, accepted: str) -> Any:
        raise ConfigError(f"{self.path_str} must be {accepted}, got {self.value!r}.")

    def require_mapping(self) -> None:
        if not isinstance(self.value, Mapping):
            self.fail("a mapping of keys to values")

    def only_keys(self, allowed: set[str]) -> None:
        unknown = sorted(str(k) for k in self.value if k not in allowed)
        if unknown:
            raise ConfigError(
                f"{self.path_str} has unknown key {unknown[0]!r}; accepted keys are: {', '.join(sorted(allowed))}."
            )

    def child(self, key: str, required: bool = False) -> ConfigNode:
        path = f"{self._path}.{key}" if self._path else key
        if isinstance(self.value, Mapping) and key in self.value:
            return ConfigNode(self.value[key], path, self.base_dir)
        if required:
            raise ConfigError(f"{path} is required but missing.")
        return ConfigNode(None, path, self.base_dir, present=False)

    def items(self) -> list[ConfigNode]:
        if not self.present or self.value is None:
            return []
        if not isinstance(self.value, list):
            self.fail("a list")
        return [ConfigNode(v, f"{self._path}[{i}]", self.base_dir) for i, v in enumerate(self.value)]

    def _default(self, default: Any) -> Any:
        if default is _MISSING:
            raise ConfigError(f"{self.path_str} is required but missing.")
        return default

    def string(self, default: Any = _MISSING) -> str:
        if not self.present or self.value is None:
            return self._default(default)  # type: ignore[no-any-return]
        if not isinstance(self.value, str):
            self.fail("a string")
        return _expand_env(self.value, self)

    def name(self, default: Any = _MISSING) -> str:
        text = self.string(default)
        if not _NAME_RE.match(text):
            self.fail("a name of letters, digits, '.', '_' or '-' (1–128 characters, no spaces or '/')")
        return text

    def string_list(self) -> tuple[str, ...]:
        result = []
        for item in self.items():
            if not isinstance(item.value, str) or not item.value.strip():
                item.fail("a non-empty string")
            result.append(item.value.strip())
        return tuple(result)

    def path(self, default: Any = _MISSING) -> Path:
        text = self.string(default) if not isinstance(default, Path) or self.present else str(default)
        if not text.strip():
            self.fail("a file system path")
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def optional_path(self) -> Path | None:
        """A path, or None when the key is absent, null, or empty after ${VAR} expansion."""
        if not self.present or self.value is None or not self.string().strip():
            return None
        return self.path()

    def boolean(self, default: bool) -> bool:
        if not self.present or self.value is None:
            return default
        if not isinstance(self.value, bool):
            self.fail("true or false")
        return self.value

    def integer(self, default: Any = _MISSING, minimum: int | None = None, maximum: int | None = None) -> int:
        if not self.present or self.value is None:
            return self._default(default)  # type: ignore[no-any-return]
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(_range_text("a whole number", minimum, maximum))
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(_range_text("a whole number", minimum, maximum))
        return value

    def number(self, default: float, minimum: float) -> float:
        if not self.present or self.value is None:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or self.value < minimum:
            self.fail(f"a number of at least {minimum}")
        return float(self.value)

    def choice(self, choices: Sequence[str], default: Any = _MISSING) -> str:
        if not self.present or self.value is None:
            return self._default(default)  # type: ignore[no-any-return]
        if self.value not in choices:
            self.fail("one of " + ", ".join(repr(c) for c in choices))
        return str(self.value)

    def cron(self, default: str) -> str:
        """A schedule that Airflow's CronTriggerTimetable accepts, checked with its own parser (croniter)."""
        text = self.string(default)
        problem = _cron_problem(text)
        if problem is not None:
            raise ConfigError(f"{self.path_str} must be {_CRON_ACCEPTED}, got {text!r}: {problem}.")
        return text


# CronTriggerTimetable replaces these presets before croniter reads the expression
# (airflow.sdk.definitions.timetables._cron.CRON_PRESETS); croniter alone knows other ones.
_CRON_PRESETS = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *",
}
_CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_CRON_ACCEPTED = (
    "a five-field cron expression such as '0 2 * * *' (minute 0–59, hour 0–23, day of month 1–31, month 1–12, "
    "day of week 0–7 or sun–sat; each a value, *, a range a-b, a list a,b or a step */n, in UTC) or one of "
    "Airflow's presets " + ", ".join(_CRON_PRESETS)
)


def _cron_problem(text: str) -> str | None:
    """Why Airflow would refuse ``text`` as a cron schedule, or None."""
    # Lazy: croniter is Airflow's cron parser; DAG files that reach this have already imported it.
    from datetime import datetime

    from croniter import CroniterBadDateError, CroniterError, croniter

    if text.startswith("@"):
        return None if text in _CRON_PRESETS else f"{text!r} is not one of Airflow's presets"
    fields = text.split()
    if len(fields) != 5:
        return f"it has {len(fields)} fields, not 5"
    try:
        croniter(text)
    except CroniterError:
        for position, name in enumerate(_CRON_FIELDS):
            alone = ["*"] * 5
            alone[position] = fields[position]
            try:
                croniter(" ".join(alone))
            except CroniterError:
                return f"the {name} field {fields[position]!r} is not valid"
        return "croniter does not accept the combination of its fields"
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)  # a fixed start: the answer must not depend on now
    except CroniterBadDateError:
        return "it never matches a date"
    return None


def _range_text(kind: str, minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} {minimum}–{maximum}"
    if minimum is not None:
        return f"{kind} ≥ {minimum}"
    return kind


def _expand_env(text: str, node: ConfigNode) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` so one file serves several machines."""

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(f"{node.path_str} refers to environment variable {var}, which is not set; "
                          f"set it or write ${{{var}:-default}}.")

    return _ENV_REF_RE.sub(replace, text)
