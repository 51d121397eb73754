"""The ``ui`` section of the config: defaults, values, and one sentence naming the key for a bad one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.core.config import load_config, parse_config
from backup_ops.core.config.model import UiSettings
from backup_ops.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def shipped() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "include" / "backup_config.yaml").read_text()))


def test_the_shipped_file_and_an_absent_section_give_the_defaults() -> None:
    assert load_config(ROOT / "include" / "backup_config.yaml").ui == UiSettings()
    raw = shipped()
    raw.pop("ui", None)
    assert parse_config(raw).ui == UiSettings(cache_seconds=60, health_requires_auth=False, page_size=25)
    raw["ui"] = None
    assert parse_config(raw).ui == UiSettings()


def test_values_are_read() -> None:
    raw = shipped()
    raw["ui"] = {"cache_seconds": 0, "health_requires_auth": True, "page_size": 100}
    assert parse_config(raw).ui == UiSettings(cache_seconds=0, health_requires_auth=True, page_size=100)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"cache_seconds": -1}, "ui.cache_seconds must be a whole number 0–3600, got -1"),
        ({"cache_seconds": "1m"}, "ui.cache_seconds must be a whole number 0–3600, got '1m'"),
        ({"page_size": 0}, "ui.page_size must be a whole number 1–500, got 0"),
        ({"health_requires_auth": "yes"}, "ui.health_requires_auth must be true or false"),
        ({"cache_secs": 5}, "ui has unknown key 'cache_secs'; accepted keys are: cache_seconds, "
                            "health_requires_auth, page_size"),
        ([1], "ui must be a mapping"),
    ],
)
def test_a_bad_value_names_the_key_and_what_is_accepted(section: Any, message: str) -> None:
    raw = shipped()
    raw["ui"] = section
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw)
